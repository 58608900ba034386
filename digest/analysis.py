"""Text analysis of stored papers, in this process or a worker of its own.

`paper_terms` gives the analysed columns the full-text index reads, and
`acronym_rows` the acronym definitions a paper's title and abstract make
(`digest.text` does the analysis). `Analyser` analyses a batch of papers, a large
batch half here and half in a worker process (`serve_analysis`); the worker runs
the same functions, so the results are the same.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence

from digest import text


def paper_terms(title: str, abstract: str, authors: str, categories: str) -> dict[str, str]:
    """The analysed columns of a paper, as the full-text index reads them."""
    return {
        "title_terms": text.indexed_terms(title),
        "abstract_terms": text.indexed_terms(abstract),
        "author_terms": text.joined(text.plain_terms(authors)),
        "category_terms": text.joined(text.plain_terms(categories)),
    }


def acronym_rows(paper_id: int | None, title: str, abstract: str) -> list[dict[str, object]]:
    """The acronym definitions in a paper's title and abstract, one row each."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for found in text.acronym_definitions(f"{title}. {abstract}"):
        key = (found.term, " ".join(found.expansion_terms))
        rows.setdefault(
            key,
            {
                "paper_id": paper_id,
                "term": key[0][:64],
                "expansion_terms": key[1][:300],
                "acronym": found.acronym[:64],
                "expansion": found.expansion[:300],
            },
        )
    return list(rows.values())


Texts = tuple[str, str, str, str]  # a paper's title, abstract, authors and categories
Analysis = tuple[dict[str, str], list[dict[str, object]]]


def analyse(texts: Sequence[Texts]) -> list[Analysis]:
    """`paper_terms` and `acronym_rows` (with no paper id yet) of each paper's texts."""
    return [(paper_terms(*t), acronym_rows(None, t[0], t[1])) for t in texts]


# A batch with at least this many papers to analyse shares the work with a process of its
# own (`Analyser`): analysis is most of a fresh load's time, and pure.
PARALLEL_ANALYSIS = 400


_WORKER = "from digest.analysis import serve_analysis as s; s()"


class Analyser:
    """Analyses the papers of a batch (`analyse`), a large batch's second half in a worker
    process (`serve_analysis`, started the first time and kept until `close`) when a CPU
    is to spare (`spare_cpu`, asked once). The worker runs the same code on the same
    texts, so the terms are the same; should it fail, the analysis goes on here.

    The worker is a plain `python -c` subprocess speaking pickle over its stdin and
    stdout: multiprocessing's spawn would run the caller's main script again, and a fork
    of a threaded process (`digest run`) is unsafe.
    """

    def __init__(self) -> None:
        self._worker: subprocess.Popen[bytes] | None = None
        self._parallel = spare_cpu()

    def analyse(self, texts: Sequence[Texts]) -> list[Analysis]:
        if not self._parallel or len(texts) < PARALLEL_ANALYSIS:
            return analyse(texts)
        half = len(texts) // 2
        try:
            worker = self._start()
            assert worker.stdin is not None and worker.stdout is not None
            pickle.dump(list(texts[half:]), worker.stdin, protocol=5)
            worker.stdin.flush()
        except OSError:
            self._give_up()
            return analyse(texts)
        ours = analyse(texts[:half])
        try:
            theirs: list[Analysis] = pickle.load(worker.stdout)
        except (OSError, EOFError, pickle.UnpicklingError):
            self._give_up()
            return ours + analyse(texts[half:])
        return ours + theirs

    def _start(self) -> subprocess.Popen[bytes]:
        if self._worker is None:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
            self._worker = subprocess.Popen(
                # -P: not the current directory first on the path (a folder holding
                # another `digest` must not supply the worker's code).
                [sys.executable, "-P", "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        return self._worker

    def _give_up(self) -> None:
        self._parallel = False
        if self._worker is not None:
            self._worker.kill()
            self.close()

    def close(self) -> None:
        """Stop the worker, if any."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(OSError):
            worker.stdin.close()  # type: ignore[union-attr]
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a worker that hangs
            worker.kill()
            worker.wait()
        worker.stdout.close()  # type: ignore[union-attr]


def spare_cpu() -> bool:
    """Whether a CPU is idle for the worker: more than one is usable and the load average
    (this process included) leaves one free. On a busy machine the worker only adds its
    overhead (measured on a shared 2-core machine at a load of 3: a fresh load 5 to 25 %
    slower with it; see README)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average to read
        load = 0.0
    return cpus > 1 and load < cpus - 0.5


def serve_analysis() -> None:
    """The worker process of `Analyser`: analyse each pickled list of texts read from
    stdin (`analyse`) and write the result to stdout, until stdin closes."""
    gc.disable()  # texts in, strings out: nothing to collect, and a large cache to walk
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            texts = pickle.load(source)
        except EOFError:
            return
        pickle.dump(analyse(texts), sink, protocol=5)
        sink.flush()
