"""The start-up check of the wiring: no GPIO with two users.

A Raspberry Pi's audio HAT takes GPIOs of its own (I2S, I2C, and on some
boards a button, LEDs or a mute line), and every line the configuration
names drives or reads GPIOs of its own. Two users on one pin is the fault a
builder cannot see until it hurts: a HAT's button pull-up holding the hook
relay's transistor on while the Pi boots, or a button shorting an output
that drives high. :func:`check` refuses such a configuration with one line
naming both users (``line1.gpio.hook_relay GPIO17 is the ReSpeaker 2-Mic HAT
v1's user button``) before any pin is opened.

What is active is read, never guessed from a driver: the firmware's device
tree (``/proc/device-tree``: the sound node's ``compatible`` and card name,
the ``hat`` node of a HAT's ID EEPROM) and ``config.txt``
(``/boot/firmware/config.txt``, or ``/boot/config.txt`` on older systems:
``dtoverlay``, ``dtparam`` and ``enable_uart`` lines). Everything takes its
root directory as a parameter, so tests feed it a fake tree. A machine with
no Raspberry Pi device tree has no HAT to collide with: only the lines are
checked against each other. Pins on gpiozero's mock factory and simulated
chips touch no hardware and are left out.

:data:`BOARDS` is the per-board pin table of ``firmware-notes/README.md``;
each entry says where its pins come from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gateway.config import Config, LineConfig
from gateway.errors import ConfigError
from gateway.lines.gpio import GpioOptions
from gateway.lines.modem import ModemOptions
from gateway.lines.mt8880 import MT8880Options

#: Where the device tree and the boot partition are; tests give their own root.
SYSTEM_ROOT = Path("/")


class WiringError(ConfigError):
    """A configured pin that another user (the HAT, an interface, a line) already has."""


def _pins(**uses: str) -> Mapping[int, str]:
    return MappingProxyType({int(name.removeprefix("gpio")): use for name, use in uses.items()})


# Names as the Raspberry Pi pinout and the HAT specification give them.
I2C_PINS = _pins(gpio2="I2C SDA (the codec's control bus)",
                 gpio3="I2C SCL (the codec's control bus)")
I2S_PINS = _pins(gpio18="I2S bit clock (PCM_CLK)", gpio19="I2S frame clock (PCM_FS)",
                 gpio20="I2S data in (PCM_DIN)", gpio21="I2S data out (PCM_DOUT)")
HAT_ID_PINS = _pins(gpio0="ID_SD, reserved for a HAT's ID EEPROM by the HAT specification",
                    gpio1="ID_SC, reserved for a HAT's ID EEPROM by the HAT specification")
RESPEAKER_EXTRAS = _pins(
    gpio17="user button (pulled up on the board)",
    gpio10="APA102 LED data (SPI0 MOSI)",
    gpio11="APA102 LED clock (SPI0 SCLK)",
    gpio12="Grove digital port", gpio13="Grove digital port",
)


@dataclass(frozen=True)
class Board:
    """An audio HAT: how the firmware shows it, and the GPIOs it occupies."""

    name: str
    #: ``dtoverlay=`` names in config.txt.
    overlays: tuple[str, ...]
    #: GPIO number -> what the board uses it for.
    pins: Mapping[int, str]
    #: The sound node's ``compatible`` (a board with its own machine driver) ...
    compatible: tuple[str, ...] = ()
    #: ... or the ``simple-audio-card,name`` of a board on the generic card driver.
    card_names: tuple[str, ...] = ()
    #: Where the pins were confirmed (shown in the notes' table).
    source: str = ""


BOARDS: tuple[Board, ...] = (
    Board("HiFiBerry DAC+ ADC", ("hifiberry-dacplusadc",), {**I2C_PINS, **I2S_PINS},
          compatible=("hifiberry,hifiberry-dacplusadc",),
          source="overlay source (i2s, i2c1)"),
    Board("HiFiBerry DAC+", ("hifiberry-dacplus", "hifiberry-dacplus-std",
                             "hifiberry-dacplus-pro"),
          {**I2C_PINS, **I2S_PINS}, compatible=("hifiberry,hifiberry-dacplus",),
          source="overlay source (i2s, i2c1)"),
    # The stock overlay cannot tell a Waveshare board from a ReSpeaker 2-Mic v1
    # loaded with it: both have a button on GPIO17, the LEDs and Grove port
    # of the ReSpeaker are not known here.
    Board("WM8960 HAT", ("wm8960-soundcard",),
          {**I2C_PINS, **I2S_PINS, 17: "user button (Waveshare board; a ReSpeaker 2-Mic v1's too)"},
          card_names=("wm8960-soundcard",),
          source="overlay source; button: two independent reports, verify"),
    Board("ReSpeaker 2-Mic HAT v1", ("seeed-2mic-voicecard",),
          {**I2C_PINS, **I2S_PINS, **RESPEAKER_EXTRAS},
          card_names=("seeed-2mic-voicecard",), source="Seeed wiki"),
    Board("ReSpeaker 2-Mic HAT v2.0", ("respeaker-2mic-v2_0-overlay", "respeaker-2mic-v2_0"),
          {**I2C_PINS, **I2S_PINS, **RESPEAKER_EXTRAS},
          card_names=("seeed2micvoicec",),
          source="Seeed v2 wiki (button, LEDs); Grove: same layout as v1, verify"),
    Board("Raspberry Pi DAC+ / DAC Pro / DigiAMP+",
          ("rpi-dacplus", "rpi-dacpro", "rpi-digiampplus", "iqaudio-dacplus"),
          {**I2C_PINS, **I2S_PINS, 22: "amplifier mute (the overlay makes it an output)"},
          compatible=("iqaudio,iqaudio-dac",),
          source="overlay source (GPIO22 pinctrl); Raspberry Pi documentation"),
    Board("Raspberry Pi Codec Zero", ("rpi-codeczero", "iqaudio-codec"),
          {**I2C_PINS, **I2S_PINS, 23: "status LED", 24: "status LED", 27: "user button"},
          compatible=("iqaudio,iqaudio-codec",), source="Raspberry Pi documentation"),
)


@dataclass(frozen=True)
class Interface:
    """A bus the firmware gives its pins to when config.txt switches it on."""

    name: str
    #: ``dtparam=<param>=on`` (or ``<param>=1`` for a top-level setting such as enable_uart).
    params: tuple[str, ...]
    pins: Mapping[int, str]
    #: Top-level setting (``enable_uart=1``) rather than a ``dtparam``.
    setting: bool = False


UART = "UART"

INTERFACES: tuple[Interface, ...] = (
    Interface("I2C1", ("i2c_arm", "i2c"), _pins(gpio2="SDA", gpio3="SCL")),
    Interface("I2S", ("i2s",), _pins(gpio18="PCM_CLK", gpio19="PCM_FS", gpio20="PCM_DIN",
                                     gpio21="PCM_DOUT")),
    Interface("SPI0", ("spi",), _pins(gpio7="CE1", gpio8="CE0", gpio9="MISO", gpio10="MOSI",
                                      gpio11="SCLK")),
    Interface(UART, ("enable_uart",), _pins(gpio14="TXD", gpio15="RXD"), setting=True),
)

#: The serial devices that are the header UART on GPIO14/15 (``serial0`` is
#: its alias on every model; ``ttyAMA0``/``ttyS0`` are it on most).
HEADER_UART_PORTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")


@dataclass(frozen=True)
class Claim:
    """One user of one GPIO, said so that ``f"{other} GPIO{gpio} is {who}"`` reads."""

    gpio: int
    who: str
    #: Two claims on the same bus are one user (a modem line on the enabled UART).
    bus: str | None = None


@dataclass
class Found:
    """Something active on this Pi that occupies pins, and how it was seen."""

    name: str
    evidence: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    def describe(self) -> str:
        pins = ", ".join(str(c.gpio) for c in sorted(self.claims, key=lambda c: c.gpio))
        return f"{self.name} ({'; '.join(self.evidence)}): GPIO {pins}"


# -- the device tree -----------------------------------------------------------------

def _strings(path: Path) -> list[str]:
    """A device-tree property: NUL-separated strings."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [s.decode("ascii", "replace") for s in raw.rstrip(b"\0").split(b"\0") if s]


def _first(path: Path) -> str:
    values = _strings(path)
    return values[0] if values else ""


def _enabled(node: Path) -> bool:
    # Devicetree specification: a node without "status" is enabled.
    status = _first(node / "status")
    return status in ("", "okay", "ok")


def is_raspberry_pi(root: Path) -> bool:
    tree = root / "proc/device-tree"
    if _first(tree / "model").startswith("Raspberry Pi"):
        return True
    return any(c.startswith("raspberrypi,") for c in _strings(tree / "compatible"))


def _sound_node(tree: Path) -> Path | None:
    # Raspberry Pi device trees carry their labels (built for overlays), so
    # the "sound" label names the node on every model.
    symbol = _first(tree / "__symbols__/sound")
    candidates = [tree / symbol.lstrip("/")] if symbol else []
    candidates += [tree / "soc/sound", tree / "sound", *sorted(tree.glob("soc*/sound"))]
    return next((c for c in candidates if c.is_dir()), None)


def _from_device_tree(root: Path) -> Iterator[tuple[Board | None, str]]:
    """(board, evidence) for the active sound card; board None for one not in the table."""
    tree = root / "proc/device-tree"
    node = _sound_node(tree)
    if node is None or not _enabled(node) or not _strings(node / "compatible"):
        return
    compatible = _strings(node / "compatible")
    card = _first(node / "simple-audio-card,name") or _first(node / "card_name")
    what = f"device tree: {compatible[0]}" + (f" {card!r}" if card else "")
    for board in BOARDS:
        if set(compatible) & set(board.compatible) or (card and card in board.card_names):
            yield board, what
            return
    yield None, what


def _hat_eeprom(root: Path) -> str | None:
    hat = root / "proc/device-tree/hat"
    if not hat.is_dir():
        return None
    product = _first(hat / "product")
    return f"HAT ID EEPROM: {product!r}" if product else "HAT ID EEPROM"


# -- config.txt ------------------------------------------------------------------------

def config_txt(root: Path) -> Path | None:
    """The firmware's config.txt: Bookworm's /boot/firmware, else the older /boot."""
    for path in (root / "boot/firmware/config.txt", root / "boot/config.txt"):
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class Setting:
    key: str
    value: str
    where: str
    #: The overlay a ``dtparam`` line belongs to ("" = the base device tree).
    overlay: str = ""


def _settings(path: Path, seen: set[Path] | None = None) -> Iterator[Setting]:
    """Every setting that can be in force: comments and ``[none]`` sections left out.

    Conditional sections (``[pi4]``, ``[cm5]`` ...) are read as if they
    applied: a line under the wrong filter then counts too, which errs on the
    side of refusing."""
    seen = seen if seen is not None else set()
    if path in seen:
        return
    seen.add(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    active = True
    overlay = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            active = line.lower() != "[none]"
            continue
        if not active:
            continue
        if line.startswith("include "):
            yield from _settings(path.parent / line.removeprefix("include ").strip(), seen)
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key == "dtoverlay":
            # "dtoverlay=" alone hands the following dtparams back to the base tree.
            overlay = value.split(",", 1)[0].split(":", 1)[0].strip().removesuffix(".dtbo")
        yield Setting(key, value, f"{path.name}:{number}", overlay)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("on", "true", "yes", "okay", "1")


def _from_config_txt(root: Path) -> Iterator[tuple[Board | Interface, str]]:
    path = config_txt(root)
    if path is None:
        return
    for s in _settings(path):
        if s.key == "dtoverlay" and s.overlay:
            for board in BOARDS:
                if s.overlay in board.overlays:
                    yield board, f"{s.where}: dtoverlay={s.overlay}"
        elif s.key == "dtparam" and not s.overlay:
            for part in s.value.split(","):
                name, _, value = part.partition("=")
                if not _truthy(value or "on"):
                    continue
                for iface in INTERFACES:
                    if not iface.setting and name.strip() in iface.params:
                        yield iface, f"{s.where}: dtparam={part.strip()}"
        else:
            for iface in INTERFACES:
                if iface.setting and s.key in iface.params and _truthy(s.value):
                    yield iface, f"{s.where}: {s.key}={s.value}"


# -- what is active ---------------------------------------------------------------------

def active(root: Path | None = None) -> list[Found]:
    """What occupies pins on this Pi, HATs first; empty when this is not a Raspberry Pi."""
    root = root or SYSTEM_ROOT
    if not is_raspberry_pi(root):
        return []
    found: dict[str, Found] = {}

    def add(name: str, evidence: str, claims: Iterable[Claim]) -> None:
        entry = found.setdefault(name, Found(name, claims=list(claims)))
        if evidence not in entry.evidence:
            entry.evidence.append(evidence)

    def add_board(board: Board, evidence: str) -> None:
        add(board.name, evidence, (Claim(gpio, f"the {board.name}'s {use}")
                                   for gpio, use in board.pins.items()))

    for dt_board, evidence in _from_device_tree(root):
        if dt_board is not None:
            add_board(dt_board, evidence)
        else:
            # Not in the table: its I2S pins are certain, anything else unknown.
            add("an I2S sound card not in the pin table", evidence,
                (Claim(gpio, f"the I2S sound card's {use} ({evidence})")
                 for gpio, use in I2S_PINS.items()))
    interfaces = []
    for entry, evidence in _from_config_txt(root):
        if isinstance(entry, Board):
            add_board(entry, evidence)
        else:
            interfaces.append((entry, evidence))
    eeprom = _hat_eeprom(root)
    if found or eeprom:
        add("HAT ID EEPROM pins", eeprom or "a HAT is fitted",
            (Claim(gpio, use) for gpio, use in HAT_ID_PINS.items()))
    for iface, evidence in interfaces:
        add(iface.name, evidence,
            (Claim(gpio, f"{use} of {iface.name} ({evidence})", bus=iface.name)
             for gpio, use in iface.pins.items()))
    return list(found.values())


# -- what the lines use -----------------------------------------------------------------

def _on_real_pins(gpio: GpioOptions) -> bool:
    return gpio.pin_factory != "mock"


def _header_uart(port: str) -> bool:
    device = port.removeprefix("spy://").split("?", 1)[0]
    return device in HEADER_UART_PORTS


def line_claims(line: LineConfig) -> list[Claim]:
    """The GPIOs a line's options name, from the options alone (nothing is opened)."""
    options = line.options
    name = line.name
    claims: list[Claim] = []
    if isinstance(options, MT8880Options):
        if options.simulate or not _on_real_pins(options.gpio):
            return []
        # The datasheet's pin names, as the notes' wiring table shows them.
        bus = [(f"D{i}", pin) for i, pin in enumerate(options.data_pins)]
        bus += [("RS0", options.rs0_pin), ("R/W", options.rw_pin), ("CS", options.cs_pin),
                ("phi2", options.phi2_pin)]
        if options.irq_pin is not None:
            bus.append(("IRQ/CP", options.irq_pin))
        claims += [Claim(pin, f"{name}.{signal}") for signal, pin in bus]
    if isinstance(options, ModemOptions) and _header_uart(options.port):
        claims += [Claim(14, f"{name}.port (TXD)", bus=UART),
                   Claim(15, f"{name}.port (RXD)", bus=UART)]
    gpio = getattr(options, "gpio", None)
    if isinstance(gpio, GpioOptions) and _on_real_pins(gpio):
        for key in ("hook_relay", "ring_detect", "loop_current"):
            pin = getattr(gpio, f"{key}_pin")
            if pin is not None:
                claims.append(Claim(pin, f"{name}.gpio.{key}"))
    return claims


def collisions(config: Config, root: Path | None = None,
               found: list[Found] | None = None) -> list[str]:
    """One sentence per pin with two users; empty when the wiring is clean."""
    taken: dict[int, Claim] = {}
    for entry in found if found is not None else active(root):
        for claim in entry.claims:
            taken.setdefault(claim.gpio, claim)
    problems = []
    for line in config.lines:
        for claim in line_claims(line):
            first = taken.get(claim.gpio)
            if first is None:
                taken[claim.gpio] = Claim(claim.gpio, f"already {claim.who}")
            elif claim.bus is None or claim.bus != first.bus:
                problems.append(f"{claim.who} GPIO{claim.gpio} is {first.who}")
            else:
                # The line is the bus's user (a modem on the enabled UART).
                taken[claim.gpio] = Claim(claim.gpio, f"already {claim.who}")
    return problems


def check(config: Config, root: Path | None = None) -> None:
    """Refuse, in one line naming both users of each pin, a wiring with a pin used twice."""
    problems = collisions(config, root)
    if problems:
        raise WiringError("; ".join(problems))
