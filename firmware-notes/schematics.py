"""Draws the hardware notes' schematics, one SVG per path, with schemdraw.

schemdraw's own SVG backend is used, so matplotlib is not needed:

    pip install -e '.[docs]'                  # schemdraw, pinned
    python firmware-notes/schematics.py       # (re)writes firmware-notes/*.svg
    python firmware-notes/schematics.py --check   # exit 1 when a committed SVG differs

Every part is placed with :func:`part`, which labels it with its designator
and value and records the designator: each one is a row of the parts table
beside the drawing in the notes (a test holds the two together).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemdraw
import schemdraw.elements as elm

HERE = Path(__file__).resolve().parent
FONT = {"fontsize": 11}

#: drawing name -> designators used in it, filled while drawing.
DESIGNATORS: dict[str, list[str]] = {}
_current: list[str] = []


def part(d: schemdraw.Drawing, element: Any, ref: str, value: str, loc: str = "top") -> Any:
    """Add ``element`` labelled ``ref`` and ``value``; ``ref`` goes into the parts table."""
    if ref not in _current:
        _current.append(ref)
    return d.add(element.label(f"{ref}\n{value}", loc=loc, **FONT))


def note(d: schemdraw.Drawing, at: Any, text: str, halign: str = "left") -> None:
    d.add(elm.Label().at(at).label(text, halign=halign, **FONT))


# -- the audio-HAT line: Pi side, a certified DAA module ----------------------------------

def audio_hat_line(d: schemdraw.Drawing) -> None:
    """Audio HAT headphone out into a DAA module; hook relay driver; ring and loop inputs."""
    # TX: coupling capacitor, then a real divider (a pot across the signal, wiper out).
    d.add(elm.Dot(open=True).label("HAT headphone out\n(HP_L, or line out)", loc="left", **FONT))
    part(d, elm.Capacitor(polar=True).right(), "C1", "10 µF 16 V")
    d.add(elm.Line().right(0.5))
    pot = part(d, elm.Potentiometer().down(), "RV1", "10 kΩ lin", loc="top")
    d.add(elm.Ground())
    d.add(elm.Line().at(pot.tap).right(1.5))
    d.add(elm.Dot(open=True).label("DAA TX in", loc="right", **FONT))

    # Hook relay driver: NPN low-side switch for a 5 V telecom relay coil.
    d.here = (13.0, -5.0)
    d.add(elm.Dot(open=True).label("GPIO16 (hook_relay_pin)\nheader pin 36", loc="left", **FONT))
    part(d, elm.Resistor().right(), "R1", "1 kΩ")
    base = d.add(elm.Dot())
    q1 = part(d, elm.BjtNpn(circle=True).anchor("base").right(), "Q1", "BC337", loc="right")
    part(d, elm.Resistor().at(base.center).down(), "R2", "10 kΩ", loc="top")
    d.add(elm.Ground())
    d.add(elm.Line().at(q1.emitter).down(0.5))
    d.add(elm.Ground())
    d.add(elm.Line().at(q1.collector).up(0.75))
    top = d.add(elm.Dot())
    coil = part(d, elm.Inductor2(loops=3).up(), "K1", "coil 5 V\n~28 mA", loc="top")
    d.add(elm.Vdd().label("+5 V (header pin 2)", **FONT))
    d.add(elm.Line().at(top.center).right(1.6))
    part(d, elm.Diode().up().toy(coil.end), "D1", "1N4148", loc="bottom")
    d.add(elm.Line().tox(coil.end))
    note(d, (q1.collector[0] + 4.0, q1.collector[1] + 1.2),
         "K1 contacts (telecom relay,\n≥ 1.5 kV coil to contact):\n"
         "to the DAA's hook input, or\nin series with the loop on\nline-interface.svg")

    # Ring detect and loop sense: open-collector outputs, pulled up to 3.3 V here.
    for y, gpio, ref_r, what in ((-8.5, "GPIO26 (ring_detect_pin)\nheader pin 37", "R3",
                                  "ring optocoupler U1, or the DAA's /RI\n"
                                  "(open collector; emitter to GND)"),
                                 (-12.5, "GPIO6 (loop_current_pin)\nheader pin 31", "R4",
                                  "loop optocoupler U2\n(open collector; emitter to GND)")):
        d.here = (0, y)
        d.add(elm.Dot(open=True).label(gpio, loc="left", **FONT))
        d.add(elm.Line().right(2.0))
        node = d.add(elm.Dot())
        part(d, elm.Resistor().up(2.0), ref_r, "10 kΩ", loc="bottom")
        d.add(elm.Vdd().label("+3.3 V", **FONT))
        d.add(elm.Line().at(node.center).right(2.0))
        d.add(elm.Dot(open=True).label(what, loc="right", **FONT))


# -- the discrete line interface (lab line simulator only) --------------------------------

def _wire(d: schemdraw.Drawing, *points: tuple[float, float]) -> None:
    for a, b in itertools.pairwise(points):
        d.add(elm.Line().at(a).to(b))


def _dot(d: schemdraw.Drawing, at: tuple[float, float]) -> None:
    d.add(elm.Dot().at(at))


def _opto(d: schemdraw.Drawing, x: float, y: float, ref: str, value: str, out: str,
          bidirectional: bool = False) -> tuple[float, float]:
    """An optocoupler: LED(s) down from (x, y), phototransistor to the right, in its package.

    Returns the LED's bottom end."""
    part(d, elm.LED().at((x, y)).down(1.5), ref, value, loc="bottom")
    if bidirectional:
        _wire(d, (x, y), (x - 1.0, y))
        d.add(elm.LED().at((x - 1.0, y - 1.5)).up(1.5))
        _wire(d, (x - 1.0, y - 1.5), (x, y - 1.5))
    q = d.add(elm.NpnPhoto().theta(0).at((x + 2.2, y - 0.75)).anchor("center"))
    d.add(elm.Rect(corner1=(x - (1.6 if bidirectional else 0.6), y + 0.3),
                   corner2=(x + 2.9, y - 1.8), ls="--").theta(0).at((0, 0)))
    d.add(elm.Line().at(q.collector).right(1.0))
    d.add(elm.Dot(open=True).label(f"C → {out}", loc="right", **FONT))
    d.add(elm.Line().at(q.emitter).right(1.0))
    d.add(elm.Dot(open=True).label("E → Pi GND", loc="right", **FONT))
    return (x, y - 1.5)


def line_interface(d: schemdraw.Drawing) -> None:
    """Protection, ring detector, hook contact, bridge, loop sense, hold circuit, transformer."""
    top, bot = 0.0, -9.0
    d.add(elm.Dot(open=True).at((0, top)).label("TIP", loc="left", **FONT))
    part(d, elm.Fuse().at((0, top)).right(2.5), "F1", "PTC 0.15 A")
    d.add(elm.Dot(open=True).at((0, bot)).label("RING", loc="left", **FONT))
    part(d, elm.Fuse().at((0, bot)).right(2.5), "F2", "PTC 0.15 A", loc="bottom")
    # Surge protector across the line, behind the PTCs.
    _wire(d, (2.5, top), (7, top))
    _wire(d, (2.5, bot), (15, bot))
    part(d, elm.DiodeTVS().at((4, top)).down().to((4, bot)), "TVS1", "thyristor\n275 V class",
         loc="bottom")
    for point in ((4, top), (4, bot), (7, top), (7, bot)):
        _dot(d, point)
    # Ring detector: always across the line; C2 blocks the DC, R5 limits the current.
    part(d, elm.Capacitor().at((7, top)).down(2.5), "C2", "1 µF 400 V film", loc="bottom")
    part(d, elm.Resistor().at((7, -2.5)).down(2.5), "R5", "6.8 kΩ 2 W", loc="bottom")
    led_end = _opto(d, 7, -5.0, "U1", "H11AA1", "GPIO26, R3", bidirectional=True)
    _wire(d, led_end, (7, bot))
    # Hook contact, then the bridge so the line's polarity does not matter.
    _wire(d, (7, top), (11.5, top))
    part(d, elm.Switch().at((11.5, top)).right(2.5), "K1", "contact (coil on\naudio-hat-line.svg)")
    bridge = part(d, elm.Ic(pins=[elm.IcPin(name="~", side="left", anchorname="ac1"),
                                  elm.IcPin(name="~", side="left", anchorname="ac2"),
                                  elm.IcPin(name="−", side="right", anchorname="minus"),
                                  elm.IcPin(name="+", side="right", anchorname="plus")],
                             size=(2.0, 2.5), pinspacing=1.2, plblsize=12)
                  .at((16.0, -1.5)).anchor("ac1"), "BR1", "4 × 1N4004 bridge", loc="bottom")
    _wire(d, (14, top), (15, top), (15, bridge.ac1[1]), bridge.ac1)
    _wire(d, bridge.ac2, (15, bridge.ac2[1]), (15, bot))
    d.add(elm.Line().at(bridge.minus).right(0.3))
    d.add(elm.Line().down(1.5))
    d.add(elm.Dot(open=True).label("dc−", loc="left", **FONT))
    # Loop sense: R6 and U2's LED, bridged by D2-D4, which carry the rest of the loop current.
    _wire(d, bridge.plus, (19.5, bridge.plus[1]), (19.5, top), (22, top))
    _dot(d, (20.5, top))
    _dot(d, (22, top))
    part(d, elm.Diode().at((20.5, top)).down(4.5), "D2–D4", "3 × 1N4004\nin series",
         loc="top")
    part(d, elm.Resistor().at((22, top)).down(2.0), "R6", "180 Ω", loc="bottom")
    led = _opto(d, 22, -2.0, "U2", "PC817", "GPIO6, R4")
    part(d, elm.Diode().at((21.2, -3.5)).up(1.5), "D5", "1N4148", loc="top")
    _wire(d, (21.2, -2.0), (22, -2.0))
    _wire(d, (21.2, -3.5), led)
    _wire(d, led, (22, -4.5))
    loop = (27.0, -4.5)
    _wire(d, (20.5, -4.5), loop)
    for point in ((22, -4.5), loop, (22, -2.0), led):
        _dot(d, point)
    # Hold circuit: an electronic inductor (Q2/Q3, R7, C3, R8) carries the DC ...
    part(d, elm.Resistor().at(loop).right(3.0), "R7", "47 kΩ", loc="top")
    gate = (30.0, -4.5)
    q = part(d, elm.BjtNpn(circle=True).reverse().at((28.5, -5.5)).anchor("collector"),
             "Q2, Q3", "2 × MPSA42\nDarlington", loc="left")
    _wire(d, loop, (27.0, -5.2), (28.5, -5.2), q.collector)
    _wire(d, gate, (30.0, q.base[1]), q.base)
    _dot(d, (30.0, q.base[1]))
    part(d, elm.Capacitor(polar=True).at((30.0, q.base[1])).down(1.8), "C3", "10 µF 63 V",
         loc="bottom")
    _wire(d, (30.0, q.base[1] - 1.8), (30.0, bot))
    part(d, elm.Resistor().at(q.emitter).down(bot - q.emitter[1]).to((28.5, bot)), "R8",
         "22 Ω 0.5 W", loc="top")
    d.add(elm.Dot(open=True).at((25.5, bot)).label("dc−", loc="left", **FONT))
    _wire(d, (25.5, bot), (34.5, bot))
    for point in ((28.5, bot), (30.0, bot)):
        _dot(d, point)
    # ... and T1 gets only the AC, through C4: no DC in its winding.
    _wire(d, loop, (27.0, -2.5), (31.0, -2.5))
    part(d, elm.Capacitor().at((31.0, -2.5)).right(2.5), "C4", "2.2 µF 250 V film")
    tr = part(d, elm.Transformer().at((34.5, -2.5)).anchor("p1"), "T1",
              "600:600 Ω\n≥ 1.5 kV isolation", loc="bottom")
    _wire(d, (33.5, -2.5), tr.p1)
    _wire(d, tr.p2, (34.5, bot))
    d.add(elm.Line().at(tr.s1).right(1.0))
    part(d, elm.Resistor().right(2.5), "R9", "620 Ω")
    d.add(elm.Dot(open=True).label("audio from the HAT\n(C1, RV1)", loc="right", **FONT))
    d.add(elm.Line().at(tr.s2).right(1.0))
    d.add(elm.Ground())
    note(d, (0, -11.5),
         "Lab line simulator or PBX extension only, never an exchange line. Line side: all but "
         "T1's secondary and U1/U2's outputs;\n"
         "keep it ≥ 6 mm from the Pi side (creepage), with no shared ground. Values and why: "
         "firmware-notes/audio-hat.md (verify on the bench).")


# -- the MT8880 line ------------------------------------------------------------------------

def _ic(left: list[tuple[str, int]], right: list[tuple[str, int]], label: str) -> Any:
    """An IC with pins listed top to bottom on each side (schemdraw counts them upwards)."""
    pins = [elm.IcPin(name=n, side="left", pin=str(num), anchorname=_anchor(n))
            for n, num in reversed(left)]
    pins += [elm.IcPin(name=n, side="right", pin=str(num), anchorname=_anchor(n))
             for n, num in reversed(right)]
    rows = max(len(left), len(right))
    return elm.Ic(pins=pins, size=(3.6, 1.2 * rows), label=label, pinspacing=1.2,
                  edgepadH=0.6, lblsize=12, plblsize=10).theta(0)


def _anchor(name: str) -> str:
    return name.replace("/", "_").replace("+", "p").replace("-", "n").lstrip("_")


def _net(d: schemdraw.Drawing, at: Any, name: str, right: bool = False, length: float = 0.8
         ) -> None:
    """A pin stub ending in a net name: wires with the same name are connected."""
    line = elm.Line().at(at).theta(0 if right else 180).length(length)
    d.add(line)
    d.add(elm.Label().at(line.end).label(name, halign="left" if right else "right", **FONT))


def _supply(d: schemdraw.Drawing, pin: Any, x: float, volts: str, ref: str, value: str) -> None:
    """A supply pin: wire out to ``x``, the rail there, its decoupling capacitor to GND."""
    _wire(d, pin, (x, pin[1]))
    d.add(elm.Vdd().at((x, pin[1])).label(volts, **FONT))
    part(d, elm.Capacitor().at((x, pin[1])).right(2.0), ref, value)
    d.add(elm.Ground())


def mt8880_line(d: schemdraw.Drawing) -> None:
    """MT8880 with crystal, decoupling, receiver input, guard time, '245 and TONE divider."""
    u = part(d, _ic([("IN+", 1), ("IN-", 2), ("GS", 3), ("VRef", 4), ("VSS", 5), ("OSC1", 6),
                     ("OSC2", 7), ("TONE", 8), ("R/W", 9), ("CS", 10)],
                    [("VDD", 20), ("St/GT", 19), ("ESt", 18), ("D3", 17), ("D2", 16),
                     ("D1", 15), ("D0", 14), ("IRQ/CP", 13), ("phi2", 12), ("RS0", 11)],
                    "MT8880C\n(CM8880)").at((0, 0)).anchor("INp"), "U1", "MT8880C",
             loc="bottom")
    x0 = u.INp[0] - 0.5  # pin ends on the left
    # Receiver (the data sheet's single-ended input): IN+ to VRef, R1/C1 into IN-, R2 from GS.
    _net(d, u.INp, "VRef", length=0.8)
    _net(d, u.VRef, "IN+", length=0.8)
    _wire(d, u.INn, (x0 - 1.5, u.INn[1]))
    _dot(d, (x0 - 1.5, u.INn[1]))
    part(d, elm.Resistor().at((x0 - 1.5, u.INn[1])).down(1.2), "R2", "100 kΩ 1%", loc="bottom")
    _wire(d, (x0 - 1.5, u.GS[1]), u.GS)
    part(d, elm.Resistor().at((x0 - 1.5, u.INn[1])).left(2.5), "R1", "100 kΩ 1%")
    part(d, elm.Capacitor().left(2.0), "C1", "100 nF")
    d.add(elm.Dot(open=True).label("line RX audio\n(from the DAA)", loc="left", **FONT))
    d.add(elm.Line().at(u.VSS).left(0.8))
    d.add(elm.Ground())
    # Crystal straight across OSC1/OSC2.
    _wire(d, u.OSC1, (x0 - 1.5, u.OSC1[1]))
    part(d, elm.Crystal().at((x0 - 1.5, u.OSC1[1])).down(1.2), "Y1", "3.579545 MHz",
         loc="top")
    _wire(d, (x0 - 1.5, u.OSC2[1]), u.OSC2)
    # TONE: coupling capacitor, then a pot across the signal as a divider.
    part(d, elm.Capacitor(polar=True).at(u.TONE).left(3.0).reverse(), "C2",
         "1 µF 16 V (+ to TONE)", loc="bottom")
    d.add(elm.Line().left(2.5))
    pot = part(d, elm.Potentiometer().down(2.5), "RV1", "10 kΩ lin", loc="top")
    d.add(elm.Ground())
    d.add(elm.Line().at(pot.tap).right(1.2))
    d.add(elm.Dot(open=True).label("DAA TX in", loc="bottom", **FONT))
    _net(d, u.R_W, "R/W")
    _net(d, u.CS, "CS")
    # Right side: VDD with C4; guard time R3 (St/GT to ESt) and C3 (VDD to St/GT).
    x1 = u.VDD[0] + 0.5
    _wire(d, u.VDD, (x1 + 3.0, u.VDD[1]))
    _wire(d, u.St_GT, (x1 + 1.5, u.St_GT[1]))
    part(d, elm.Capacitor().at((x1 + 1.5, u.VDD[1])).down(1.2), "C3", "100 nF", loc="bottom")
    part(d, elm.Resistor().at((x1 + 0.5, u.St_GT[1])).down(1.2), "R3", "300 kΩ", loc="top")
    _wire(d, u.ESt, (x1 + 0.5, u.ESt[1]))
    for point in ((x1 + 1.5, u.VDD[1]), (x1 + 1.5, u.St_GT[1]), (x1 + 0.5, u.St_GT[1])):
        _dot(d, point)
    _dot(d, (x1 + 2.3, u.VDD[1]))
    d.add(elm.Vdd().at((x1 + 2.3, u.VDD[1])).label("+5 V", **FONT))
    part(d, elm.Capacitor().at((x1 + 3.0, u.VDD[1])).right(2.0), "C4", "100 nF at pins 20/5")
    d.add(elm.Ground())
    _net(d, u.IRQ_CP, "IRQ/CP", right=True)
    _net(d, u.phi2, "phi2", right=True)
    _net(d, u.RS0, "RS0", right=True)

    # The '245: A side on the chip, with 100 k pull-downs there; B side on the Pi.
    v = part(d, _ic([("DIR", 1), ("A4", 5), ("A3", 4), ("A2", 3), ("A1", 2), ("GND", 10)],
                    [("VCC", 20), ("/OE", 19), ("B4", 15), ("B3", 16), ("B2", 17), ("B1", 18)],
                    "74LVC245A\nat 3.3 V").at((x1 + 8.0, u.D3[1])).anchor("A4"),
             "U2", "74LVC245A", loc="bottom")
    for i in range(4):
        _wire(d, getattr(u, f"D{3 - i}"), getattr(v, f"A{4 - i}"))
    _net(d, v.DIR, "R/W")
    d.add(elm.Line().at(v.GND).left(0.6))
    d.add(elm.Ground())
    _dot(d, (x1 + 4.0, u.D0[1]))
    part(d, elm.Resistor().at((x1 + 4.0, u.D0[1])).down(2.5), "R4–R7",
         "100 kΩ each,\nA1–A4 to GND", loc="bottom")
    d.add(elm.Ground())
    xb = v.VCC[0] + 0.5
    _supply(d, v.VCC, xb + 1.0, "+3.3 V", "C5", "100 nF")
    _wire(d, v.OE, (xb + 0.6, v.OE[1]), (xb + 0.6, v.OE[1] - 0.3))
    d.add(elm.Ground().at((xb + 0.6, v.OE[1] - 0.3)))
    for i, gpio in enumerate((5, 6, 12, 13)):
        _net(d, getattr(v, f"B{i + 1}"), f"D{i}: GPIO{gpio} (data_pins[{i}])", right=True,
             length=2.2)

    # The bus control nets to the Pi: CS pulled up, phi2 pulled down, IRQ/CP pulled up.
    y = u.RS0[1] - 4.0
    for k, (name, gpio, ref, up) in enumerate((("CS", 24, "R8", True), ("phi2", 25, "R9", False),
                                               ("IRQ/CP", 23, "R10", True), ("RS0", 16, "", None),
                                               ("R/W", 26, "", None))):
        x = u.INp[0] + 6.0 * k - 6.0
        d.add(elm.Label().at((x, y)).label(name, halign="right", **FONT))
        _wire(d, (x + 0.2, y), (x + 1.4, y))
        d.add(elm.Line().at((x + 1.4, y)).down(1.6))
        end = (x + 1.4, y - 1.6)
        d.add(elm.Dot(open=True).at(end).label(f"GPIO{gpio}", loc="bottom", **FONT))
        if ref:
            _dot(d, (x + 1.4, y - 0.6))
            r = part(d, elm.Resistor().at((x + 1.4, y - 0.6)).right(2.2), ref, "10 kΩ to\n"
                     + ("+3.3 V" if up else "GND"))
            if up:
                d.add(elm.Vdd().at(r.end).label("+3.3 V", **FONT))
            else:
                d.add(elm.Ground().at(r.end))


# -- the voice modem: USB, or the header UART through a MAX3232 ---------------------------

def modem_line(d: schemdraw.Drawing) -> None:
    """A USB modem through a powered hub; a serial modem on GPIO14/15 through a MAX3232."""
    d.add(elm.Dot(open=True).at((0, 0)).label("Pi USB", loc="left", **FONT))
    _wire(d, (0, 0), (1.5, 0))
    d.add(elm.Rect(corner1=(1.5, 0.9), corner2=(6.0, -0.9)).theta(0).at((0, 0)))
    d.add(elm.Label().at((3.75, 0)).label("powered USB hub\n(its own 5 V supply)", **FONT))
    _wire(d, (6.0, 0), (7.5, 0))
    d.add(elm.Dot(open=True).at((7.5, 0)).label(
        "USB voice modem (CDC ACM), its own RJ11: the modem's line side is its approved DAA;\n"
        "port = \"/dev/serial/by-id/usb-…\"", loc="right", **FONT))

    u = part(d, _ic([("C1+", 1), ("C1-", 3), ("C2+", 4), ("C2-", 5), ("T1IN", 11),
                     ("R1OUT", 12), ("T2IN", 10), ("GND", 15)],
                    [("VCC", 16), ("V+", 2), ("V-", 6), ("T1OUT", 14), ("R1IN", 13),
                     ("T2OUT", 7)], "MAX3232\nat 3.3 V").at((6.0, -4.0)).anchor("C1p"),
             "U1", "MAX3232", loc="bottom")
    x0 = u.C1p[0] - 0.5
    # Charge pump: 100 nF each at 3.3 V (the data sheet's value for 3.0-3.6 V).
    for pos, neg, ref in ((u.C1p, u.C1n, "C1"), (u.C2p, u.C2n, "C2")):
        _wire(d, pos, (x0 - 1.0, pos[1]))
        part(d, elm.Capacitor().at((x0 - 1.0, pos[1])).down(1.2), ref, "100 nF", loc="top")
        _wire(d, (x0 - 1.0, neg[1]), neg)
    _net(d, u.T1IN, "GPIO14 TXD (header pin 8)", length=1.5)
    _net(d, u.R1OUT, "GPIO15 RXD (header pin 10)", length=1.5)
    d.add(elm.Line().at(u.T2IN).left(0.8))
    d.add(elm.Ground())
    d.add(elm.Label().at((x0 - 1.2, u.T2IN[1] - 0.9)).label(
        "T2IN low: DTR held on (the header has no DTR)", halign="right", **FONT))
    d.add(elm.Line().at(u.GND).left(0.8))
    d.add(elm.Ground())
    x1 = u.VCC[0] + 0.5
    _supply(d, u.VCC, x1 + 1.0, "+3.3 V", "C5", "100 nF")
    for pin, ref in ((u.Vp, "C3"), (u.Vn, "C4")):
        _wire(d, pin, (x1 + 1.0, pin[1]))
        part(d, elm.Capacitor().at((x1 + 1.0, pin[1])).right(2.0), ref, "100 nF")
        d.add(elm.Ground())
    for pin, dest in ((u.T1OUT, "DE-9 pin 3 (TD, to the modem)"),
                      (u.R1IN, "DE-9 pin 2 (RD, from the modem)"),
                      (u.T2OUT, "DE-9 pin 4 (DTR); pin 5 GND")):
        _wire(d, pin, (x1 + 4.0, pin[1]))
        d.add(elm.Dot(open=True).at((x1 + 4.0, pin[1])).label(dest, loc="right", **FONT))
    d.add(elm.Label().at((x1 + 4.0, u.T2OUT[1] - 1.3)).label(
        "the modem is DCE: a straight-through cable", halign="left", **FONT))


DRAWINGS: dict[str, Callable[[schemdraw.Drawing], None]] = {
    "audio-hat-line": audio_hat_line,
    "line-interface": line_interface,
    "mt8880-line": mt8880_line,
    "modem-line": modem_line,
}


def render(name: str) -> bytes:
    """One drawing as SVG bytes (deterministic for a given schemdraw version)."""
    schemdraw.use("svg")
    _current.clear()
    with schemdraw.Drawing(show=False) as d:
        d.config(unit=2.5, fontsize=11, margin=1.5)
        DRAWINGS[name](d)
    DESIGNATORS[name] = list(_current)
    data = d.get_imagedata("svg")
    return data if isinstance(data, bytes) else data.encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed SVGs instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name in DRAWINGS:
        path = HERE / f"{name}.svg"
        svg = render(name)
        if args.check:
            if not path.is_file() or path.read_bytes() != svg:
                stale.append(path.name)
        else:
            path.write_bytes(svg)
    if stale:
        print(f"schematics.py: out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
