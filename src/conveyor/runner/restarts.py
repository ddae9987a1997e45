"""When the supervisor restarts a worker that died: at once after a first crash, then with
exponential back-off while it keeps dying (a full disk, a broken database, a poison job).

Pure bookkeeping: the supervisor tells it what happened and asks what is due; nothing here
starts a process or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Delay before the second restart of a crash streak; it doubles up to :data:`MAX_DELAY_S`.
BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
#: A worker that lived this long, or finished a job, ends its slot's crash streak.
STABLE_S = 30.0


def restart_delay(streak: int, base: float = BASE_DELAY_S, cap: float = MAX_DELAY_S) -> float:
    """Seconds to wait before restarting after the ``streak``-th crash in a row (pure)."""
    if streak <= 1:
        return 0.0
    return float(min(cap, base * 2 ** (streak - 2)))


@dataclass(slots=True)
class Pending:
    index: int
    due: float
    streak: int
    reason: str


@dataclass
class Restarts:
    """Crash streaks per worker slot and the restarts waiting for their time."""

    streaks: dict[int, int] = field(default_factory=dict)
    pending: dict[int, Pending] = field(default_factory=dict)

    def exited(self, index: int, now: float, *, crashed: bool, stable: bool,
               reason: str) -> float:
        """Record an exit; return the delay before this slot's restart."""
        if stable or not crashed:
            self.streaks.pop(index, None)
        if not crashed:
            return 0.0
        streak = self.streaks.get(index, 0) + 1
        self.streaks[index] = streak
        delay = restart_delay(streak)
        if delay > 0:
            self.pending[index] = Pending(index, now + delay, streak, reason)
        return delay

    def due(self, now: float) -> list[int]:
        """Slots whose restart is due now (removed from the pending ones)."""
        ready = [p.index for p in list(self.pending.values()) if p.due <= now]
        for index in ready:
            self.pending.pop(index, None)
        return ready

    def describe(self, now: float) -> str | None:
        """Why workers are missing, for ``/readyz``; None when no restart is waiting."""
        waiting = sorted(list(self.pending.values()), key=lambda p: p.index)
        if not waiting:
            return None
        return "; ".join(
            f"worker {p.index} died {p.streak} times in a row ({p.reason}), restarting in "
            f"{max(0.0, p.due - now):.0f} s" for p in waiting
        )
