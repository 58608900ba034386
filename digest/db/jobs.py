"""Leases and job runs of the scheduler (digest.schedule): one holder of a job's lease
at a time, and a record of each run.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest.models import JobRun, Lease


def acquire_lease(
    session: Session, name: str, holder: str, now: datetime, expires_at: datetime
) -> bool:
    """Take or renew lease `name` for `holder` unless another holder's lease is still valid."""
    lease = session.get(Lease, name)
    if lease is None:
        try:
            with session.begin_nested():
                session.add(Lease(name=name, holder=holder, expires_at=expires_at))
            return True
        except IntegrityError:
            return False
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=expires_at)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, name: str, holder: str) -> None:
    lease = session.get(Lease, name)
    if lease is not None and lease.holder == holder:
        session.delete(lease)


def current_lease(session: Session, name: str) -> Lease | None:
    return session.get(Lease, name)


def record_job_run(
    session: Session,
    job: str,
    holder: str,
    started_at: datetime,
    finished_at: datetime,
    ok: bool,
    summary: str,
) -> None:
    session.add(
        JobRun(
            job=job,
            holder=holder,
            started_at=started_at,
            finished_at=finished_at,
            ok=ok,
            summary=summary,
        )
    )


def last_job_run(session: Session, job: str) -> JobRun | None:
    return session.scalar(
        select(JobRun).where(JobRun.job == job).order_by(JobRun.id.desc()).limit(1)
    )
