"""What training tells the user: progress output.

Progress is a tqdm bar on a terminal; on anything else (a pipe, a log file, a notebook's
captured stream) one plain line per finished stage, with no carriage returns or cursor codes.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

#: How the stage kinds are shown.
STAGE_LABELS = {"layer": "new", "refine": "refine", "end_to_end": "end to end"}


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress bar on a terminal, one line per stage elsewhere, nothing when not verbose."""

    def __init__(self, verbose, total: int, n_stages: int, n_layers: int, name: str):
        self.stream = sys.stderr
        self.verbose = bool(verbose)
        self.tty = self.verbose and _is_tty(self.stream)
        self.n_stages, self.n_layers, self.name = n_stages, n_layers, name
        self._done = 0
        self.bar = tqdm(total=total, disable=not self.tty, leave=True, dynamic_ncols=True,
                        file=self.stream) if self.tty else None

    def describe(self, stage, val_db: float, best_db: float) -> None:
        """Show the running stage and its validation NMSE (terminal only)."""
        if self.bar is not None:
            label = STAGE_LABELS.get(stage.name, stage.name)
            self.bar.set_description(f"layer {stage.layer + 1}/{self.n_layers} ({label})")
            self.bar.set_postfix_str(f"val NMSE {val_db:.2f} dB (best {best_db:.2f})")

    def update(self, n: int) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(n)

    def stage_done(self, record: dict) -> None:
        """One line per finished stage when the output is not a terminal."""
        self._done += 1
        if not self.verbose or self.tty:
            return
        label = STAGE_LABELS.get(record["stage"], record["stage"])
        self.stream.write(
            f"{self.name}: stage {self._done}/{self.n_stages}, layer {record['layer']}/"
            f"{self.n_layers} ({label}): {record['steps']} steps, validation NMSE "
            f"{record['val_nmse_db']:.2f} dB, learning rate {record['learning_rate']:.3g}, "
            f"stopped: {record['stop']}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
