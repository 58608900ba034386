"""Locate the bundled resource folders (templates, migrations, seeds).

In a checkout (or an editable install) they are the top-level folders of the
repository; a built wheel carries them inside the package as
`digest/_resources/<name>`. Both layouts resolve through `resource_dir`.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder holding the bundled resource `name`."""
    for candidate in (_PACKAGE / "_resources" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"bundled resource folder {name!r} is missing from the install")
