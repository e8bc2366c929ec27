"""The line's ears: DTMF (ITU-T Q.24), call-progress tones and line energy, in numpy.

    from gateway.detect import Listener
    ears = Listener(country="de", rate=48000)
    for event in ears.feed(block):      # int16 samples as captured
        print(event.to_json())          # {"t": 1.230, "event": "dtmf", "key": "5", ...}
    ears.own_key("5", start, end)       # the gateway's own key: its echo is not the far end

Events are :class:`Dtmf`, :class:`Tone`, :class:`ToneEnd`, :class:`Voice`
and :class:`Silence`; times are seconds of audio fed, counted in samples.
Nothing here knows of calls, HTTP or hardware.
"""

from gateway.detect.countries import COUNTRIES, Country, ToneSpec
from gateway.detect.events import Dtmf, Event, Silence, Tone, ToneEnd, Voice
from gateway.detect.listener import Listener

__all__ = ["COUNTRIES", "Country", "Dtmf", "Event", "Listener", "Silence", "Tone", "ToneEnd",
           "ToneSpec", "Voice"]
