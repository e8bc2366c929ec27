"""Talk-off: speech must not make DTMF keys or call-progress tones.

espeak-ng speaks paragraphs in seven languages, in several voices, pitches
and speeds (its steady synthetic pitch is a harder test than most human
speech); some go to the listener at espeak's own 22.05 kHz, the rest through
sox to 8 kHz and a G.711 round trip, like a phone line. The default run has
about four minutes of speech; ``-m slow`` runs every voice at every pitch.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect import Dtmf, Listener, Tone, Voice
from tests import sox_signals as sx
from tests.sox_signals import needs_espeak, needs_sox

pytestmark = [needs_sox, needs_espeak]

TEXTS = {
    "en": ("Thank you for calling. All of our lines are busy at the moment, please stay on "
           "the line and your call will be answered in turn. If you know the extension of the "
           "person you want, you may dial it at any time. For opening hours, press one. To "
           "report a fault on your line, press two, or hold for an operator. Zero, one, two, "
           "three, four, five, six, seven, eight, nine, star and hash."),
    "de": ("Guten Tag, Sie sind mit der Hausverwaltung verbunden. Leider sind im Moment alle "
           "Leitungen belegt. Bitte bleiben Sie am Apparat, der nächste freie Mitarbeiter ist "
           "gleich für Sie da. Wenn Sie eine Störung an der Heizung melden möchten, sprechen "
           "Sie nach dem Signalton Ihren Namen und Ihre Telefonnummer. Eins, zwei, drei, vier."),
    "fr": ("Bonjour, vous êtes bien au service clientèle. Tous nos conseillers sont "
           "actuellement en ligne. Merci de patienter, votre appel sera traité dans quelques "
           "instants. Pour connaître nos horaires d'ouverture, tapez un. Pour signaler un "
           "problème de livraison, tapez deux. Un, deux, trois, quatre, cinq, six, sept."),
    "es": ("Buenos días, ha llamado a la oficina de atención al cliente. En este momento "
           "todas nuestras líneas están ocupadas. Por favor, no cuelgue, su llamada es muy "
           "importante para nosotros. Si conoce la extensión, márquela ahora. Uno, dos, tres, "
           "cuatro, cinco, seis, siete, ocho, nueve y cero."),
    "it": ("Buongiorno, avete chiamato il servizio clienti. Tutti i nostri operatori sono "
           "occupati. Restate in linea per non perdere la priorità acquisita. Per informazioni "
           "sugli orari, premete uno. Per parlare con un operatore, premete due. Uno, due, "
           "tre, quattro, cinque, sei, sette, otto, nove."),
    "hu": ("Jó napot kívánok, ön a központi ügyfélszolgálatot hívta. Jelenleg minden "
           "munkatársunk foglalt, kérjük, tartsa a vonalat. Ha tudja a kívánt mellék számát, "
           "most tárcsázza. Egy, kettő, három, négy, öt, hat, hét, nyolc, kilenc, tíz."),
    "nl": ("Goedendag, u bent verbonden met de klantenservice. Op dit moment zijn al onze "
           "medewerkers in gesprek. Blijft u aan de lijn, u wordt zo spoedig mogelijk "
           "geholpen. Voor onze openingstijden kiest u een. Een, twee, drie, vier, vijf, zes."),
}
COUNTRY = {"en": "uk", "de": "de", "fr": "fr", "es": "es", "it": "it", "hu": "hu", "nl": "nl"}
#: (voice suffix, pitch, speed): a low and a high voice for each language.
VOICES = [("+m3", 30, 150), ("+f4", 75, 175)]
ALL_VOICES = [(v, p, s) for v in ("", "+m1", "+m3", "+m7", "+f1", "+f3", "+f4")
              for p in (10, 40, 70, 99) for s in (130, 190)]


def listen(pcm: np.ndarray, rate: int, country: str) -> list[object]:
    listener = Listener(country, rate)
    step = rate // 10
    events = [e for i in range(0, len(pcm), step) for e in listener.feed(pcm[i: i + step])]
    return events + listener.flush()


def talk_off(voices: list[tuple[str, int, int]]) -> tuple[float, list[object], int]:
    seconds, false, heard_voice = 0.0, [], 0
    for n, (lang, text) in enumerate(TEXTS.items()):
        for m, (variant, pitch, speed) in enumerate(voices):
            words, rate = sx.speech(text, lang + variant, speed=speed, pitch=pitch)
            # A loud and a quiet speaker, as lines differ.
            gain = 2.0 if (n + m) % 2 else 0.5
            words = np.clip(words.astype(np.float64) * gain, -32767, 32767).astype(np.int16)
            if (n + m) % 2:
                words, rate = sx.g711(sx.resample(words, rate, 8000), "mu-law"), 8000
            events = listen(words, rate, COUNTRY[lang])
            seconds += len(words) / rate
            false += [(lang, variant, pitch, e) for e in events if isinstance(e, Dtmf | Tone)]
            heard_voice += any(isinstance(e, Voice) for e in events)
    return seconds, false, heard_voice


def test_minutes_of_speech_in_seven_languages_make_no_key_and_no_tone() -> None:
    seconds, false, heard_voice = talk_off(VOICES)
    assert seconds > 180, f"only {seconds:.0f} s of speech"
    assert false == []
    # Not deaf: every recording was heard as voice.
    assert heard_voice == len(TEXTS) * len(VOICES)


@pytest.mark.slow
def test_an_hour_of_speech_makes_no_key_and_no_tone() -> None:
    seconds, false, _ = talk_off(ALL_VOICES)
    assert seconds > 3000
    assert false == []
