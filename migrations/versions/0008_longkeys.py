"""Long title keys bounded: a title key over `MAX_TITLE_KEY` characters, stored before
ingest cut such keys to their first characters and a hash (`normalize_title`), is
rewritten the same way, so that the paper's next record finds its row instead of making
a second one. A paper whose bounded key is taken already (its record came again after
that change, making the second row) keeps its old key.

`normalize_title` leaves a key it made unchanged, so applied to a stored key it gives
that key bounded.

Revision ID: 0008_longkeys
Revises: 0007_ingestfast
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from digest.sources.records import MAX_TITLE_KEY, normalize_title

revision = "0008_longkeys"
down_revision = "0007_ingestfast"
branch_labels = None
depends_on = None

papers = sa.table("papers", sa.column("id"), sa.column("key"), sa.column("title_key"))


def upgrade() -> None:
    bind = op.get_bind()
    long_keys = sa.func.length(papers.c.title_key) > MAX_TITLE_KEY
    for paper_id, key, title_key in bind.execute(
        sa.select(papers.c.id, papers.c.key, papers.c.title_key).where(long_keys)
    ).all():
        bounded = normalize_title(title_key)
        new_key = f"title:{bounded}" if key == f"title:{title_key}" else key
        taken = bind.execute(
            sa.select(papers.c.id).where(papers.c.key == new_key, papers.c.id != paper_id)
        ).first()
        if taken is None:
            bind.execute(
                sa.update(papers)
                .where(papers.c.id == paper_id)
                .values(key=new_key, title_key=bounded)
            )


def downgrade() -> None:
    pass  # a bounded key is as valid under 0007 as the long one was
