"""One line's ears: the detectors behind one object the call layer drives per call."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.detect.countries import country as find_country
from gateway.detect.dtmf import KEYS, DtmfDetector
from gateway.detect.events import Dtmf, Event
from gateway.detect.frames import RATE
from gateway.detect.progress import VOICE_DBM0, ProgressDetector
from gateway.detect.resample import Resampler
from gateway.errors import DetectError

#: How long after the gateway's own key its echo may still be heard: the
#: hybrid's echo is back within milliseconds, the rest is the uncertainty of
#: the caller's timeline against the capture's (ALSA buffers, a few tens of ms).
ECHO_TAIL_S = 0.1
#: ...and how early, for a capture that runs slightly ahead of the estimate.
ECHO_LEAD_S = 0.02


class Listener:
    """Feed a call's received audio in blocks; get what was heard, in time order.

    ``rate`` is the capture's sample rate (resampled to 8 kHz inside);
    ``country`` selects the call-progress tones. Every ``t`` in the events
    is seconds of audio fed since the start (or the last :meth:`reset`),
    counted in samples. Tell the listener about the gateway's own keys with
    :meth:`own_key` and their echo is not reported as the far end's.
    """

    def __init__(self, country: str = "us", rate: int = RATE, *, silence_s: float = 0.5,
                 voice_dbm0: float = VOICE_DBM0, echo_tail_s: float = ECHO_TAIL_S) -> None:
        self.country = country.strip().lower()
        table = find_country(self.country)
        if not 0.1 <= silence_s <= 600:
            raise DetectError(f"silence_s {silence_s} is outside 0.1 to 600 s")
        self.rate = rate
        self.echo_tail_s = echo_tail_s
        self._resampler = Resampler(rate, RATE)
        self._dtmf = DtmfDetector()
        self._progress = ProgressDetector(table, silence_s, voice_dbm0, code=self.country)
        self._own: list[tuple[str, float, float]] = []
        self._fed = 0

    @property
    def time(self) -> float:
        """Seconds of audio fed so far (samples / rate)."""
        return self._fed / self.rate

    @property
    def key_sounding(self) -> bool:
        """A DTMF key has started and its end has not been heard yet."""
        return self._dtmf.active

    def reset(self) -> None:
        """Forget everything heard: a new call, time 0 again."""
        self._resampler.reset()
        self._dtmf.reset()
        self._progress.reset()
        self._own.clear()
        self._fed = 0

    def own_key(self, key: str, start: float, end: float) -> None:
        """The gateway itself has ``key`` on the line from ``start`` to ``end`` (seconds,
        this listener's timeline); a key heard then is its echo, not the far end."""
        symbol = key.upper()
        if len(symbol) != 1 or symbol not in KEYS:
            raise DetectError(f"own_key: {key!r} is not a DTMF key")
        if end < start:
            raise DetectError(f"own_key: end {end} is before start {start}")
        self._own.append((symbol, start - ECHO_LEAD_S, end + self.echo_tail_s))
        # Keys heard are reported at most a few seconds late; older marks cannot matter.
        horizon = self.time - 30.0
        self._own = [own for own in self._own if own[2] >= horizon]

    def feed(self, block: npt.ArrayLike) -> list[Event]:
        """Audio received (mono, int16 or float in int16 units); the events now certain."""
        x = np.asarray(block)
        if x.ndim != 1:
            raise DetectError(f"feed takes one channel (a 1-D array), not shape {x.shape}")
        if x.dtype.kind not in "iuf":
            raise DetectError(f"feed takes PCM samples, not {x.dtype}")
        self._fed += len(x)
        return self._run(self._resampler.feed(x), final=False)

    def flush(self) -> list[Event]:
        """The end of the stream: whatever was still being decided."""
        return self._run(self._resampler.flush(), final=True)

    def _run(self, x: npt.NDArray[np.float64], final: bool) -> list[Event]:
        events: list[Event] = []
        for key in self._dtmf.feed(x) + (self._dtmf.flush() if final else []):
            if not self._is_echo(key):
                events.append(key)
        events.extend(self._progress.feed(x))
        if final:
            events.extend(self._progress.flush())
        events.sort(key=lambda e: e.t)
        return events

    def _is_echo(self, key: Dtmf) -> bool:
        end = key.t + key.duration_ms / 1000
        return any(symbol == key.key and key.t <= until and end >= since
                   for symbol, since, until in self._own)
