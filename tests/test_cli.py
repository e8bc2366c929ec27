import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway import __version__
from tests.support import decode_wav, needs_multimon


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


@needs_multimon
def test_render_decodes_to_exactly_the_keys(tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    result = cli("render", "0123456789*#ABCD", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert decode_wav(out) == "0123456789*#ABCD"


@needs_multimon
def test_render_options(tmp_path: Path) -> None:
    from gateway.tones import read_wav

    out = tmp_path / "x.wav"
    result = cli("render", "1w2", "-o", str(out), "--rate", "48000", "--duration", "40",
                 "--gap", "50", "--level", "-20", "--twist", "-1", "--ramp", "5")
    assert result.returncode == 0, result.stderr
    samples, rate = read_wav(out)
    assert rate == 48000
    # 100 ms lead, 2 x (40 + 50) ms, 500 ms pause, 100 ms tail.
    assert len(samples) == round(48000 * 0.88)
    assert abs(int(samples.max())) < 32767 * (10 ** (-20 / 20) + 10 ** (-21 / 20))
    assert decode_wav(out) == "12"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "12x", "-o", "x.wav"], "invalid key 'x' at position 3"),
        (["render", "1", "-o", "x.wav", "--gap", "10"], "gap 10 ms is below the minimum 50 ms"),
        (["render", "1", "-o", "x.wav", "--rate", "9000"], "rate 9000 Hz is not one of"),
        (["render", "1", "-o", "x.wav", "--rate", "fast"], "argument --rate: invalid int value"),
        (["render", "1"], "the following arguments are required: -o/--output"),
        (["render", "1", "-o", "/nonexistent/dir/x.wav"], "cannot write /nonexistent/dir/x.wav"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
def test_bad_options_get_one_line_and_status_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("dtmf-gateway: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


RENDER_REFUSALS = [
    (["--rate", "11025"], "rate 11025 Hz is not one of 8000, 16000, 22050, 44100, 48000"),
    (["--duration", "39"], "duration 39 ms is below the minimum 40 ms"),
    (["--duration", "2001"], "duration 2001 ms is above the maximum 2000 ms"),
    (["--gap", "49"], "gap 49 ms is below the minimum 50 ms"),
    (["--gap", "5001"], "gap 5001 ms is above the maximum 5000 ms"),
    (["--twist", "-3.5"], "twist -3.5 dB is outside -3 to +3 dB"),
    (["--twist", "3.5"], "twist 3.5 dB is outside -3 to +3 dB"),
    (["--twist", "nan"], "twist nan dB is outside -3 to +3 dB"),
    (["--ramp", "0.5"], "ramp 0.5 ms is outside 1 to 5 ms"),
    (["--ramp", "5.5"], "ramp 5.5 ms is outside 1 to 5 ms"),
    (["--ramp", "inf"], "ramp inf ms is outside 1 to 5 ms"),
    (["--level", "-60.5"], "level -60.5 dBFS is outside -60 to -8.08 dBFS at 2 dB twist"),
    (["--level", "-8.07"], "level -8.07 dBFS is outside -60 to -8.08 dBFS at 2 dB twist"),
    (["--level", "-8.64", "--twist", "3"], "level -8.64 dBFS is outside -60 to -8.65 dBFS at 3"),
    (["--level", "-5.64", "--twist", "-3"], "level -5.64 dBFS is outside -60 to -5.65 dBFS"),
    (["--level", "nan"], "level nan dBFS is outside -60 to -8.08 dBFS"),
    (["--level", "inf"], "level inf dBFS is outside -60 to -8.08 dBFS"),
    # Negative values as their own word, as a user types them: argparse
    # alone would take "-inf" and "-1e3" for options and say so.
    (["--level", "-inf"], "level -inf dBFS is outside -60 to -8.08 dBFS"),
    (["--level", "-1e3"], "level -1000 dBFS is outside -60 to -8.08 dBFS"),
    (["--level=-inf"], "level -inf dBFS is outside -60 to -8.08 dBFS"),
    (["--twist", "-nan"], "twist nan dB is outside -3 to +3 dB"),
]


@pytest.mark.parametrize(
    ("args", "message"), [pytest.param(*case, id=" ".join(case[0])) for case in RENDER_REFUSALS]
)
def test_render_refuses_each_value_outside_its_range(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """One line naming the range, status 2, no numpy warning and no file."""
    out = tmp_path / "x.wav"
    result = cli("render", "1", "-o", str(out), *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"dtmf-gateway: error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_render_help_lists_rates_and_ranges() -> None:
    result = cli("render", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for expected in ("sample rate: 8000, 16000, 22050, 44100, 48000 (default 8000)",
                     "tone on, between its -6 dB points: 40-2000 (default 100)",
                     "tone off, between -6 dB points: 50-5000 (default 100)",
                     "low-group level: -60 up to -8.08 at the default twist (-8.65 at +3,"
                     " -5.65 at -3)",
                     "high group above low group: -3 to +3 (default 2)",
                     "raised-cosine on/off ramp, centred on the -6 dB points: 1-5 (default 4)"):
        assert expected in text


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dtmf-gateway {__version__}"


def test_onhook_drops_a_relay_left_energised(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """What systemd's ExecStopPost does after a SIGKILL: the relay pin, still
    driven high as the killed process left it, is driven low and released."""
    from gateway.cli import main
    from gateway.lines.gpio import pin_factory

    factory = pin_factory("mock")
    try:
        relay = factory.pin(17)
        relay.output_with_state(True)  # as a killed gateway left it, mid-call
        (tmp_path / "g.toml").write_text(
            '[[line]]\nname = "hat1"\ndriver = "alsa"\ndevice = "null"\n'
            'gpio = { pin_factory = "mock", hook_relay_pin = 17 }\n'
            '[[line]]\nname = "sim"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        )
        assert main(["onhook", "--config", str(tmp_path / "g.toml")]) == 0
        assert relay.state is False
        assert capsys.readouterr().out == "hat1: on hook\nsim: on hook\n"
    finally:
        factory.reset()


def test_onhook_reports_a_line_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(
        '[[line]]\nname = "m"\ndriver = "modem"\nport = "/nonexistent/ttyACM9"\n')
    result = cli("onhook", "--config", str(tmp_path / "g.toml"))
    assert result.returncode == 1
    assert result.stderr.startswith("m: did not open (the modem at /nonexistent")
    assert result.stderr.rstrip().endswith("check that the line is on hook")
    assert "Traceback" not in result.stderr


# -- passwd -------------------------------------------------------------------------


def passwd(tmp_path: Path, *args: str, stdin: str = "long enough\n"
           ) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "g.toml"
    config.touch()
    return subprocess.run([sys.executable, "-m", "gateway", "passwd", *args, "--config",
                           str(config)], input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("commands", "wrong"), [
    ("SendDTMF,Bogus", "unknown command 'Bogus'"),
    ("SendDTMF,Transfer", "unknown command 'Transfer'"),
    (",", "no command named"),
    ("", "no command named"),
])
def test_passwd_refuses_commands_the_api_does_not_have(
    tmp_path: Path, commands: str, wrong: str
) -> None:
    result = passwd(tmp_path, "bob", "--commands", commands)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"dtmf-gateway: error: --commands {commands!r}: {wrong}; the "
                             "commands are SendDTMF, Call, HangUp, ListActiveCalls, Speak, Play, "
                             "Record, BlindTransfer, Hold, Unhold, AttendedTransfer, Forward, or * "
                             "for all\n")
    assert not (tmp_path / "users.toml").exists()


def test_passwd_commands_are_matched_as_the_api_matches_them(tmp_path: Path) -> None:
    from gateway.auth import load_users

    result = passwd(tmp_path, "bob", "--commands", " senddtmf, ListActiveCalls ")
    assert result.returncode == 0, result.stderr
    bob = load_users(tmp_path / "users.toml")["bob"]
    assert (bob.may("SendDTMF"), bob.may("ListActiveCalls"), bob.may("Call")) == (
        True, True, False)
    # A new password without --commands keeps what the user may do.
    assert passwd(tmp_path, "bob", stdin="another one\n").returncode == 0
    assert load_users(tmp_path / "users.toml")["bob"].commands == bob.commands


def test_a_users_file_with_a_command_unknown_here_still_loads(tmp_path: Path) -> None:
    """Written by hand, or by an older version: it loads, and saving another
    user keeps it as it is."""
    from gateway.auth import hash_password, load_users, save_user

    users = tmp_path / "users.toml"
    users.write_text(f'[users.old]\npassword = "{hash_password("old password")}"\n'
                     'commands = ["SendDTMF", "Transfer"]\n')
    save_user(users, "new", "new password", ["Call"])
    loaded = load_users(users)
    assert loaded["old"].commands == {"senddtmf", "transfer"}
    assert loaded["new"].commands == {"call"}


def test_the_api_and_the_users_file_know_the_same_commands() -> None:
    from gateway.api.views import COMMANDS
    from gateway.auth import COMMAND_NAMES

    assert set(COMMAND_NAMES) == {"SendDTMF", "Call", "HangUp", "ListActiveCalls", "Speak",
                                  "Play", "Record", "BlindTransfer", "Hold", "Unhold",
                                  "AttendedTransfer", "Forward"}
    assert sorted(name for name, _ in COMMANDS.values()) == sorted(COMMAND_NAMES)
    assert all(key == name.lower() for key, (name, _) in COMMANDS.items())


def test_passwd_help_says_how_long_a_password_must_be() -> None:
    result = cli("passwd", "--help")
    assert result.returncode == 0
    assert "at least 8 characters" in " ".join(result.stdout.split())
    assert "SendDTMF, Call, HangUp, ListActiveCalls" in " ".join(result.stdout.split())


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
              "print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["passwd", "--help"],
                                  ["bogus"]])
def test_commands_that_need_no_tones_load_none(argv: list[str]) -> None:
    """Issue 17: building every command's options imported numpy, the tone
    engine, the configuration and selftest (and ran a scrypt) for --version."""
    loaded = _modules_after(f"from gateway.cli import main; main({argv!r})")
    heavy = {"numpy", "gateway.tones", "gateway.config", "gateway.selftest", "gateway.lines",
             "gateway.wiring", "flask"}
    assert not loaded & heavy, loaded & heavy
    if argv[0] != "passwd":
        assert "gateway.auth" not in loaded and "hashlib" not in loaded


def test_render_builds_only_its_own_options() -> None:
    loaded = _modules_after("from gateway.cli import main; main(['render', '--help'])")
    assert "gateway.tones" in loaded
    assert not loaded & {"gateway.selftest", "gateway.config", "gateway.auth", "flask"}


def test_the_command_list_is_the_same_built_or_not() -> None:
    """Each command's line of help is written once for the list and once where
    its options are built (selftest's in its module): they must agree."""
    from gateway.cli import build_parser

    assert build_parser(None).format_help() == build_parser("*").format_help()
    for name in ("render", "serve", "passwd", "onhook", "detect", "selftest"):
        assert build_parser(name).format_help() == build_parser("*").format_help(), name


def _threads_after_numpy(setup: str, env: dict[str, str]) -> tuple[int, int]:
    """(threads of the process, threads Python knows of) once numpy is imported."""
    script = (f"{setup}\nimport os, threading, numpy\n"
              "print(len(os.listdir('/proc/self/task')), threading.active_count())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True, env=env)
    counted = [int(x) for x in result.stdout.splitlines()[-1].split()]
    return counted[0], counted[1]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no pool on one core")
def test_the_cli_starts_no_thread_pool_of_numpys() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    # What the test must be able to see: on its own, numpy starts a pool.
    alone = _threads_after_numpy("", env)
    assert alone[0] > alone[1], alone
    # Through the CLI, and with every module serve and selftest load: no
    # library starts a thread Python does not know of.
    through_cli = _threads_after_numpy(
        "from gateway.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
        "    pass\nimport gateway.server, gateway.wiring, gateway.selftest, gateway.speech", env)
    assert through_cli[0] == through_cli[1], through_cli
    # Whoever set it otherwise is obeyed.
    assert _threads_after_numpy("from gateway.cli import main\ntry:\n    main(['--version'])\n"
                                "except SystemExit:\n    pass",
                                {**env, "OPENBLAS_NUM_THREADS": "2"})[0] > through_cli[0]


def _cores_of(pid: int) -> set[frozenset[int]]:
    """The core sets the process's threads may run on."""
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        listed = Path(f"/proc/{pid}/task/{task}/status").read_text().split(
            "Cpus_allowed_list:")[1].split()[0]
        cores: set[int] = set()
        for part in listed.split(","):
            first, _, last = part.partition("-")
            cores.update(range(int(first), int(last or first) + 1))
        found.add(frozenset(cores))
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to choose")
@pytest.mark.parametrize("cpus", ["one", "all"])
def test_serve_cpus_one_keeps_every_thread_on_the_last_core(tmp_path: Path, cpus: str) -> None:
    (tmp_path / "g.toml").write_text('[[line]]\nname = "l1"\ndriver = "simulated"\n'
                                     'record_dir = "rec"\n')
    from gateway.auth import save_user

    save_user(tmp_path / "users.toml", "u", "password-1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "g.toml"),
         "--port", "0", "--cpus", cpus], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
            if found:
                break
        assert found
        started = _cores_of(proc.pid)
        # A password check starts a checking thread.
        with urllib.request.urlopen(f"http://127.0.0.1:{found.group(1)}/api?command="
                                    "ListActiveCalls&Username=u&Password=password-1") as got:
            assert b"<Code>200</Code>" in got.read()
        checked = _cores_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    allowed = frozenset(os.sched_getaffinity(0))
    last = frozenset({max(allowed)})
    if cpus == "one":
        assert started == {last}, started
        # scrypt holds no GIL: its thread runs on the other cores.
        assert checked == {last, allowed - last}, checked
    else:
        assert started == {allowed}, started
        assert checked == started
