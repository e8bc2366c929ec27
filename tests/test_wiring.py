"""The wiring check against fake Raspberry Pi device trees and config.txt files.

Each fake tree is written here the way the firmware lays out
``/proc/device-tree`` (NUL-terminated strings, the ``sound`` label under
``__symbols__``), with the overlay's own compatible strings and card names
copied from the overlay sources; the expected GPIOs are typed in from the
boards' documentation (Seeed's wiki: the ReSpeaker 2-Mic's button is on
GPIO17, its Grove digital port on GPIO12/13; the Raspberry Pi pinout: I2S
on GPIO18-21), not taken from the table under test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway import wiring
from gateway.cli import main
from gateway.config import Config, from_mapping
from gateway.wiring import BOARDS, WiringError, check, collisions
from tests.support import example_line_block

NOTES = Path(__file__).resolve().parent.parent / "firmware-notes"


class FakePi:
    """A root directory with a Raspberry Pi's device tree and boot partition."""

    def __init__(self, root: Path, model: str = "Raspberry Pi 4 Model B Rev 1.4",
                 compatible: tuple[str, ...] = ("raspberrypi,4-model-b", "brcm,bcm2711")) -> None:
        self.root = root
        self.tree = root / "proc/device-tree"
        self.prop("model", model)
        self.prop("compatible", *compatible)
        # The base tree's sound node is there and disabled until an overlay fills it.
        self.prop("__symbols__/sound", "/soc/sound")
        self.prop("soc/sound/status", "disabled")

    def prop(self, path: str, *values: str) -> None:
        file = self.tree / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"".join(v.encode() + b"\0" for v in values))

    def sound(self, *compatible: str, node: str = "soc/sound", name: str = "",
              card_name: str = "") -> None:
        """The sound node as an overlay leaves it: ``name`` is a simple-audio-card's
        ``simple-audio-card,name``, ``card_name`` a machine driver's product name."""
        self.prop(f"{node}/compatible", *compatible)
        self.prop(f"{node}/status", "okay")
        if name:
            self.prop(f"{node}/simple-audio-card,name", name)
        if card_name:
            self.prop(f"{node}/card_name", card_name)

    def config_txt(self, text: str, path: str = "boot/firmware/config.txt") -> None:
        file = self.root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)


def audio_line(name: str = "hat", **gpio: Any) -> dict[str, Any]:
    return {"name": name, "driver": "alsa", "device": "plughw:CARD=x,DEV=0", "gpio": gpio}


def config(*lines: dict[str, Any]) -> Config:
    return from_mapping({"line": list(lines)})


DEFAULT_AUDIO_PINS = {"hook_relay_pin": 17, "ring_detect_pin": 27, "loop_current_pin": 22}


@pytest.fixture
def pi(tmp_path: Path) -> FakePi:
    return FakePi(tmp_path)


def refusal(cfg: Config, root: Path) -> str:
    with pytest.raises(WiringError) as caught:
        check(cfg, root)
    return str(caught.value)


# -- the HAT's pins --------------------------------------------------------------------

def test_the_respeaker_button_refuses_the_documented_hook_relay(pi: FakePi) -> None:
    # seeed-voicecard's overlay: simple-audio-card named "seeed-2mic-voicecard".
    pi.sound("simple-audio-card", name="seeed-2mic-voicecard")
    assert refusal(config(audio_line(**DEFAULT_AUDIO_PINS)), pi.root) == (
        "hat.gpio.hook_relay GPIO17 is the ReSpeaker 2-Mic HAT v1's user button "
        "(pulled up on the board)")


def test_respeaker_v2_grove_port_collides_with_mt8880_d2_d3(pi: FakePi) -> None:
    # Seeed's v2.0 overlay names its card "seeed2micvoicec" and adds a codec at 0x18.
    pi.sound("simple-audio-card", name="seeed2micvoicec")
    cfg = config({"name": "mt1", "driver": "mt8880"})  # the driver's default bus pins
    assert refusal(cfg, pi.root) == (
        "mt1.D2 GPIO12 is the ReSpeaker 2-Mic HAT v2.0's Grove digital port; "
        "mt1.D3 GPIO13 is the ReSpeaker 2-Mic HAT v2.0's Grove digital port")


def test_hifiberry_leaves_the_documented_pins_free_but_not_i2s(pi: FakePi) -> None:
    pi.sound("hifiberry,hifiberry-dacplusadc")
    check(config(audio_line(**DEFAULT_AUDIO_PINS)), pi.root)
    message = refusal(config(audio_line(hook_relay_pin=18)), pi.root)
    assert message == ("hat.gpio.hook_relay GPIO18 is the HiFiBerry DAC+ ADC's I2S bit clock "
                       "(PCM_CLK)")


@pytest.mark.parametrize(
    ("card_name", "key", "gpio", "use"),
    [
        # Raspberry Pi documentation: GPIO22 DigiAMP+ mute; Codec Zero button 27, LEDs 23/24.
        ("RPi DigiAMP+", "loop_current_pin", 22, "amplifier mute"),
        ("RPi Codec Zero", "ring_detect_pin", 27, "user button"),
        ("RPi Codec Zero", "hook_relay_pin", 23, "status LED"),
    ],
)
def test_raspberry_pi_audio_boards(pi: FakePi, card_name: str, key: str, gpio: int,
                                   use: str) -> None:
    compatible = "iqaudio,iqaudio-codec" if "Codec" in card_name else "iqaudio,iqaudio-dac"
    pi.sound(compatible, card_name=card_name)
    message = refusal(config(audio_line(**{key: gpio})), pi.root)
    field = key.removesuffix("_pin")
    assert message.startswith(f"hat.gpio.{field} GPIO{gpio} is the Raspberry Pi ")
    assert use in message


def test_an_unknown_i2s_card_takes_the_i2s_pins_only(pi: FakePi) -> None:
    pi.sound("acme,dac-of-the-month")
    check(config(audio_line(**DEFAULT_AUDIO_PINS)), pi.root)
    assert refusal(config(audio_line(ring_detect_pin=21)), pi.root) == (
        "hat.gpio.ring_detect GPIO21 is the I2S sound card's I2S data out (PCM_DOUT) "
        "(device tree: acme,dac-of-the-month)")


def test_a_disabled_sound_node_is_no_hat(pi: FakePi) -> None:
    pi.prop("soc/sound/compatible", "simple-audio-card")
    pi.prop("soc/sound/simple-audio-card,name", "seeed-2mic-voicecard")
    # status stays "disabled"
    check(config(audio_line(**DEFAULT_AUDIO_PINS)), pi.root)
    assert wiring.active(pi.root) == []


def test_the_sound_label_finds_the_node_wherever_the_model_puts_it(pi: FakePi) -> None:
    pi.prop("__symbols__/sound", "/axi/sound")
    pi.sound("simple-audio-card", node="axi/sound",
             name="wm8960-soundcard")
    assert refusal(config(audio_line(hook_relay_pin=17)), pi.root).startswith(
        "hat.gpio.hook_relay GPIO17 is the WM8960 HAT's user button")


def test_a_hat_eeprom_reserves_id_sd_and_id_sc(pi: FakePi) -> None:
    pi.prop("hat/product", "Some HAT")
    message = refusal(config(audio_line(hook_relay_pin=0)), pi.root)
    assert message == ("hat.gpio.hook_relay GPIO0 is ID_SD, reserved for a HAT's ID EEPROM "
                       "by the HAT specification")


# -- config.txt -------------------------------------------------------------------------

def test_config_txt_overlay_counts_even_before_the_reboot(pi: FakePi) -> None:
    pi.config_txt("[all]\ndtparam=audio=off\ndtoverlay=wm8960-soundcard\n")
    message = refusal(config(audio_line(hook_relay_pin=17)), pi.root)
    assert message.startswith("hat.gpio.hook_relay GPIO17 is the WM8960 HAT's user button")
    (found,) = [f for f in wiring.active(pi.root) if f.name == "WM8960 HAT"]
    assert found.evidence == ["config.txt:3: dtoverlay=wm8960-soundcard"]


def test_older_systems_read_boot_config_txt(pi: FakePi) -> None:
    pi.config_txt("dtoverlay=seeed-2mic-voicecard\n", path="boot/config.txt")
    assert "ReSpeaker 2-Mic HAT v1" in refusal(config(audio_line(hook_relay_pin=17)), pi.root)


@pytest.mark.parametrize(
    "text",
    [
        "#dtoverlay=seeed-2mic-voicecard\n",
        "dtoverlay=hifiberry-dacplusadc # not seeed-2mic-voicecard\n",
        "[none]\ndtoverlay=seeed-2mic-voicecard\n",
        # A dtparam after a dtoverlay is that overlay's parameter, not the base tree's.
        "dtoverlay=some-overlay\ndtparam=spi=on\n",
        "dtparam=spi=off\nenable_uart=0\n",
    ],
)
def test_config_txt_lines_that_are_not_in_force(pi: FakePi, text: str) -> None:
    pi.config_txt(text)
    cfg = config(audio_line(hook_relay_pin=17, ring_detect_pin=10, loop_current_pin=14))
    assert collisions(cfg, pi.root) == []
    check(cfg, pi.root)


def test_config_txt_include_and_interfaces(pi: FakePi) -> None:
    pi.config_txt("include extra.txt\n")
    pi.config_txt("dtparam=i2c_arm=on,spi=on\n", path="boot/firmware/extra.txt")
    assert refusal(config(audio_line(hook_relay_pin=10, ring_detect_pin=3)), pi.root) == (
        "hat.gpio.hook_relay GPIO10 is MOSI of SPI0 (extra.txt:1: dtparam=spi=on); "
        "hat.gpio.ring_detect GPIO3 is SCL of I2C1 (extra.txt:1: dtparam=i2c_arm=on)")


def test_a_modem_on_the_enabled_header_uart_is_its_user(pi: FakePi) -> None:
    pi.config_txt("enable_uart=1\n")
    modem = {"name": "modem1", "driver": "modem", "port": "/dev/serial0"}
    check(config(modem), pi.root)
    mt = {"name": "mt1", "driver": "mt8880", "rs0_pin": 14}
    assert refusal(config(modem, mt), pi.root) == "mt1.RS0 GPIO14 is already modem1.port (TXD)"
    # Without the modem, the pin is the UART's.
    assert refusal(config(mt), pi.root) == (
        "mt1.RS0 GPIO14 is TXD of UART (config.txt:1: enable_uart=1)")


# -- lines against each other, anywhere ------------------------------------------------

def test_two_lines_on_one_pin_are_refused_on_any_machine(tmp_path: Path) -> None:
    cfg = config(audio_line("a", hook_relay_pin=17),
                 {"name": "mt1", "driver": "mt8880", "gpio": {"hook_relay_pin": 17}})
    assert refusal(cfg, tmp_path) == "mt1.gpio.hook_relay GPIO17 is already a.gpio.hook_relay"


def test_an_mt8880_relay_on_its_own_bus_pin(tmp_path: Path) -> None:
    cfg = config({"name": "mt1", "driver": "mt8880", "cs_pin": 24,
                  "gpio": {"hook_relay_pin": 24}})
    assert refusal(cfg, tmp_path) == "mt1.gpio.hook_relay GPIO24 is already mt1.CS"


def test_two_modems_on_the_header_uart(tmp_path: Path) -> None:
    cfg = config({"name": "m1", "driver": "modem", "port": "/dev/serial0"},
                 {"name": "m2", "driver": "modem", "port": "spy:///dev/ttyAMA0?file=x"})
    assert refusal(cfg, tmp_path).startswith("m2.port (TXD) GPIO14 is already m1.port (TXD)")


def test_mock_and_simulated_pins_touch_no_hardware(pi: FakePi) -> None:
    pi.sound("simple-audio-card", name="seeed-2mic-voicecard")
    cfg = config(audio_line("a", pin_factory="mock", hook_relay_pin=17),
                 audio_line("b", pin_factory="mock", hook_relay_pin=17),
                 {"name": "mt1", "driver": "mt8880", "simulate": True,
                  "gpio": {"hook_relay_pin": 17}},
                 {"name": "sim", "driver": "simulated"})
    assert collisions(cfg, pi.root) == []
    check(cfg, pi.root)


def test_not_a_raspberry_pi_says_nothing(tmp_path: Path) -> None:
    # A config.txt without a Pi device tree (an image being prepared, say) is not read ...
    FakePi(tmp_path / "x").config_txt("dtoverlay=seeed-2mic-voicecard\n")
    check(config(audio_line(**DEFAULT_AUDIO_PINS)), tmp_path / "x" / "elsewhere")
    # ... nor is another board's device tree, whose GPIO numbers mean other pins.
    other = FakePi(tmp_path / "bb", model="TI AM335x BeagleBone Black",
                   compatible=("ti,am335x-bone-black", "ti,am33xx"))
    other.sound("simple-audio-card", name="seeed-2mic-voicecard")
    check(config(audio_line(**DEFAULT_AUDIO_PINS)), other.root)
    assert wiring.active(other.root) == []


# -- serve and selftest ------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


RESPEAKER_HAT_LINE = """
[[line]]
name = "hat"
driver = "alsa"
device = "plughw:CARD=seeed2micvoicec,DEV=0"
[line.gpio]
hook_relay_pin = 17
"""


def test_serve_refuses_in_one_line_before_opening_anything(
    pi: FakePi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pi.sound("simple-audio-card", name="seeed2micvoicec")
    monkeypatch.setattr(wiring, "SYSTEM_ROOT", pi.root)
    path = write(pi.root / "gateway.toml", RESPEAKER_HAT_LINE)
    assert main(["serve", "--config", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == ("dtmf-gateway: error: hat.gpio.hook_relay GPIO17 is the ReSpeaker 2-Mic HAT "
                   "v2.0's user button (pulled up on the board)\n")


def test_selftest_reports_the_collision_and_opens_no_line(
    pi: FakePi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pi.config_txt("dtoverlay=respeaker-2mic-v2_0-overlay\n")
    monkeypatch.setattr(wiring, "SYSTEM_ROOT", pi.root)
    path = write(pi.root / "gateway.toml", RESPEAKER_HAT_LINE)
    assert main(["selftest", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert ("  PASS  in use          ReSpeaker 2-Mic HAT v2.0 (config.txt:1: "
            "dtoverlay=respeaker-2mic-v2_0-overlay): GPIO 2, 3, 10, 11, 12, 13, 17, 18, 19, 20, "
            "21; HAT ID EEPROM pins (a HAT is fitted): GPIO 0, 1\n") in out
    assert ("  FAIL  pins            hat.gpio.hook_relay GPIO17 is the ReSpeaker 2-Mic HAT "
            "v2.0's user button (pulled up on the board)\nwiring: FAIL\n") in out
    assert "hat (alsa)" not in out and out.rstrip().endswith('(firmware-notes/README.md, "Pins")')


def test_selftest_shows_the_hat_it_found(
    pi: FakePi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pi.sound("hifiberry,hifiberry-dacplusadc")
    monkeypatch.setattr(wiring, "SYSTEM_ROOT", pi.root)
    path = write(pi.root / "gateway.toml", '[[line]]\nname = "sim"\ndriver = "simulated"\n'
                 'time_scale = 0.0\nrecord_dir = "rec"\n')
    assert main(["selftest", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("  PASS  in use          HiFiBerry DAC+ ADC (device tree: "
            "hifiberry,hifiberry-dacplusadc)") in out
    assert "  PASS  pins            0 line pin(s), each with one user\n" in out


# -- the notes show the same table --------------------------------------------------------

def test_the_notes_pin_table_is_the_checks_table() -> None:
    """firmware-notes/README.md lists, per board, exactly the GPIOs the check refuses."""
    text = (NOTES / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in {b.name for b in BOARDS}:
            rows[cells[0]] = (cells[1], sorted(int(n) for n in re.findall(r"\d+", cells[2])))
    assert set(rows) == {b.name for b in BOARDS}
    for board in BOARDS:
        overlays, pins = rows[board.name]
        assert pins == sorted(board.pins), board.name
        assert all(f"`{o}`" in overlays for o in board.overlays), board.name


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.name)
def test_the_example_audio_lines_pins_are_free_on_every_board(pi: FakePi, board: Any) -> None:
    """The example configuration's audio line (its optional loop-current pin
    too) passes the check whichever HAT's overlay config.txt loads."""
    block = example_line_block("hat1")
    example = (Path(__file__).resolve().parent.parent / "deploy/gateway.example.toml").read_text()
    loop = re.search(r"^# # loop_current_pin = (\d+)", example, re.M)
    assert loop is not None
    block["line"][0]["gpio"]["loop_current_pin"] = int(loop[1])
    pi.config_txt(f"dtoverlay={board.overlays[0]}\n")
    check(from_mapping(block), pi.root)
    assert board.name in {found.name for found in wiring.active(pi.root)}


def test_collisions_lists_every_pin_not_only_the_first(pi: FakePi) -> None:
    pi.sound("simple-audio-card", name="seeed-2mic-voicecard")
    problems = collisions(config(audio_line(hook_relay_pin=17, ring_detect_pin=12,
                                            loop_current_pin=11)), pi.root)
    assert [p.split(" is ")[0] for p in problems] == [
        "hat.gpio.hook_relay GPIO17", "hat.gpio.ring_detect GPIO12", "hat.gpio.loop_current GPIO11"]
