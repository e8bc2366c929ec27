"""First run from a checkout: render a demo key string so a newcomer can hear it."""

from __future__ import annotations

from gateway.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["render", "0123456789*#ABCD", "-o", "demo.wav"]) or print("wrote demo.wav"))
