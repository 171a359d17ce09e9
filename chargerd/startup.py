"""What start-up trips on, found before anything starts, and one line when it fails anyway.

A charger is started by systemd, which restarts it every few seconds whatever
the exit: a start-up error must say in one line what is wrong and where, the
same line ``chargerd --check-config`` prints for the same file, and never a
traceback (the journal would fill with them, and the technician would read
the last frame of a stack instead of the key to fix).  So ``--check-config``
and the start run the same checks (:func:`check_environment` here, the
``[ocpp]`` keys in :func:`chargerd.daemon.check_ocpp_keys`): what one passes,
the other starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

from chargerd.config import Config, ConfigError
from hal.errors import HardwareConfigError

log = logging.getLogger(__name__)

#: What each gpiozero pin factory imports; "mock" and "emulated" need nothing.
FACTORY_MODULES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "pigpio": "pigpio", "native": None}
#: Exit status of any start-up error (the same as a configuration error of --check-config).
EXIT_CONFIG = 2
#: Exit status of a daemon that failed unexpectedly after starting.
EXIT_FAILED = 1


def check_environment(cfg: Config) -> None:
    """Paths and hardware the configuration names can be used here; ConfigError if not."""
    _check_paths(cfg)
    _check_hardware(cfg)


def _fail(cfg: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{cfg.source}: {key}: {message}", path=cfg.source, key=key)


def _dir_problem(directory: Path) -> str | None:
    """Why the daemon could not use (or create) ``directory``, None if it can."""
    if directory.exists():
        if not directory.is_dir():
            return f"{directory} is a file, expected a directory"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable by this user (uid {os.geteuid()})"
        return None
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{directory} cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return (
            f"{directory} cannot be created: {parent} is not writable by this user "
            f"(uid {os.geteuid()})"
        )
    return None


def _check_paths(cfg: Config) -> None:
    paths = cfg.paths
    problem = _dir_problem(paths.state_dir)
    if problem:
        raise _fail(cfg, "paths.state_dir", problem)
    if paths.database.is_dir():
        raise _fail(cfg, "paths.state_dir", f"{paths.database} is a directory, expected a file")
    if paths.log_file is not None:
        if paths.log_file.is_dir():
            raise _fail(cfg, "paths.log_file", f"{paths.log_file} is a directory, expected a file")
        if paths.log_file.exists():
            if not os.access(paths.log_file, os.W_OK):
                raise _fail(
                    cfg,
                    "paths.log_file",
                    f"{paths.log_file} is not writable by this user (uid {os.geteuid()})",
                )
        else:
            problem = _dir_problem(paths.log_file.parent)
            if problem:
                raise _fail(cfg, "paths.log_file", problem)
    if paths.control_socket.is_dir():
        raise _fail(
            cfg, "paths.control_socket", f"{paths.control_socket} is a directory, expected a path"
        )
    problem = _dir_problem(paths.control_socket.parent)
    if problem:
        raise _fail(cfg, "paths.control_socket", problem)


def missing_pi_modules(cfg: Config) -> list[str]:
    """The Python modules ``driver = "pi"`` would import and this machine lacks."""
    hw = cfg.hardware
    if hw.driver != "pi" or hw.pin_factory in ("mock", "emulated"):
        return []
    wanted: list[str] = []
    if hw.pin_factory is None:  # gpiozero picks the first that imports
        found = [m for m in ("lgpio", "RPi.GPIO", "pigpio") if _importable(m)]
        wanted += [] if found else ["lgpio"]
    elif FACTORY_MODULES.get(hw.pin_factory):
        wanted.append(str(FACTORY_MODULES[hw.pin_factory]))
    # The RC522 and the MCP3008 talk SPI through the same pin factory: nothing more.
    return [m for m in dict.fromkeys(wanted) if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False


def _check_hardware(cfg: Config) -> None:
    hw = cfg.hardware
    if hw.driver != "pi":
        return
    missing = missing_pi_modules(cfg)
    if missing:
        raise _fail(
            cfg,
            "hardware.driver",
            f'"pi" needs the Raspberry Pi libraries, missing here: {", ".join(missing)}; '
            "install chargerd[pi] (pip install 'chargerd[pi]')",
        )
    from hal.pi.station import check_pins

    try:
        check_pins(hw)
    except HardwareConfigError as exc:
        raise _fail(cfg, "hardware", str(exc)) from None


def make_private(cfg: Config) -> None:
    """idTags are personal data: the state directory 0700, its files and the log file 0600.

    New files get these modes from the process umask (077, set by ``main``);
    this tightens what an older version or a hand-made directory left open.
    """
    targets = [(cfg.paths.state_dir, 0o700)]
    if cfg.paths.log_file is not None:
        targets.append((cfg.paths.log_file, 0o600))
    db = cfg.paths.database
    targets += [(Path(f"{db}{suffix}"), 0o600) for suffix in ("", "-wal", "-shm", "-journal")]
    for path, mode in targets:
        try:
            current = path.stat().st_mode & 0o777
            if current & ~mode:
                os.chmod(path, current & mode)
                log.info("%s was mode %o; now %o (it holds personal data)", path, current, mode)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours (root-owned): say so, start anyway
            log.warning("cannot restrict the mode of %s: %s", path, exc)


def one_line(exc: BaseException) -> str:
    """An unexpected error as one line: what, and where in our code it happened."""
    import chargerd
    import hal

    roots = [Path(m.__file__).parent for m in (chargerd, hal) if m.__file__]
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        file = Path(frame.filename)
        for root in roots:
            if file.is_relative_to(root):
                where = f"{root.name}/{file.relative_to(root)}:{frame.lineno}"
                return f"{what} (at {where} in {frame.name})"
    return what


class FailedWhileRunning(Exception):
    """An error that escaped the daemon after it had started: a failure, not a start-up error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def run_guarded(start: Callable[[], int], *, stderr_print: Callable[[str], None]) -> int:
    """Run ``start``; any error that escapes becomes one line and an exit status.

    Every start-up error exits 2, like ``--check-config``: a configuration or
    hardware configuration error with its own message, anything else with
    what and where (``chargerd: cannot start: ...``).  An error after the
    daemon started (:class:`FailedWhileRunning`) exits 1.  The traceback goes
    to the log at DEBUG only.
    """
    try:
        return start()
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        stderr_print(f"chargerd: {exc}")
        return EXIT_CONFIG
    except HardwareConfigError as exc:
        stderr_print(f"chargerd: hardware: {exc}")
        log.debug("hardware configuration error at start", exc_info=True)
        return EXIT_CONFIG
    except FailedWhileRunning as exc:
        stderr_print(f"chargerd: failed: {one_line(exc.cause)}")
        log.debug("the daemon failed", exc_info=exc.cause)
        return EXIT_FAILED
    except Exception as exc:
        stderr_print(f"chargerd: cannot start: {one_line(exc)}")
        log.debug("the daemon could not start", exc_info=True)
        return EXIT_CONFIG
