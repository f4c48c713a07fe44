"""What the plugin tells panoptes about a run when it registers it (GET /create_workflow)."""

import getpass
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

VERSION = "1.0.0"
CLIENT = f"snakemake-logger-plugin-panoptes/{VERSION}"
TOKEN_FLAG = "--logger-panoptes-token"
REDACTED = "***"
#: Where Snakemake looks for the Snakefile when -s is not given (snakemake.common).
DEFAULT_SNAKEFILES = ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile")
# Plugin 0.3.0 could only pass the token in the address: http://host:5000/t/<token>.
_TOKEN_SEGMENT = re.compile(r"/t/[^/\s?#&]+")


def redact(text: str, token: str | None = None) -> str:
    """``text`` without tokens: ``/t/<token>`` address segments and the token itself."""
    text = _TOKEN_SEGMENT.sub(f"/t/{REDACTED}", text)
    if token:
        text = text.replace(token, REDACTED)
    return text


def redact_command(argv: Sequence[str], token: str | None = None) -> str:
    """The command line, with the value of ``--logger-panoptes-token`` and tokens hidden."""
    words: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            words.append(REDACTED)
            hide_next = False
        elif arg == TOKEN_FLAG:
            words.append(arg)
            hide_next = True
        elif arg.startswith(TOKEN_FLAG + "="):
            words.append(f"{TOKEN_FLAG}={REDACTED}")
        else:
            words.append(arg)
    return redact(" ".join(words), token)


def snakefile_argument(argv: Sequence[str]) -> str | None:
    """The value of ``-s``/``--snakefile`` in a Snakemake command line, if given."""
    for index, arg in enumerate(argv):
        if arg in ("-s", "--snakefile") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--snakefile="):
            return arg.split("=", 1)[1]
        if arg.startswith("-s") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
    return None


def find_snakefile(argv: Sequence[str], directory: str) -> str | None:
    """The main Snakefile as Snakemake resolves it from ``directory`` (where it was started)."""
    given = snakefile_argument(argv)
    if given is not None:
        if "://" in given:
            return given
        return os.path.abspath(os.path.join(directory, given))
    for candidate in DEFAULT_SNAKEFILES:
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return os.path.abspath(path)
    return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers (KeyError, OSError)
        return None


def _snakemake_version() -> str | None:
    try:
        import snakemake
    except Exception:
        return None
    version = getattr(snakemake, "__version__", None)
    return str(version) if version else None


@dataclass(frozen=True)
class RunDescription:
    """The parts of the registration that are known when the plugin is set up."""

    command: str
    snakefile: str | None
    host: str
    user: str | None
    snakemake_version: str | None

    @classmethod
    def capture(cls, token: str | None, argv: Sequence[str] | None = None) -> "RunDescription":
        # Snakemake sets up its loggers before it changes to --directory, so the working
        # directory now is the one a relative -s is relative to.
        argv = list(sys.argv if argv is None else argv)
        return cls(
            command=redact_command(argv, token),
            snakefile=find_snakefile(argv, os.getcwd()),
            host=platform.node(),
            user=_user(),
            snakemake_version=_snakemake_version(),
        )

    def form(self, snakefile_main: str | None = None) -> dict[str, str]:
        """The form body of GET /create_workflow; the working directory is read now."""
        fields = {
            "command": self.command,
            "workdir": _cwd(),
            "snakefile": snakefile_main or self.snakefile,
            "host": self.host,
            "user": self.user,
            "snakemake_version": self.snakemake_version,
            "client": CLIENT,
        }
        return {name: value for name, value in fields.items() if value}


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
