"""A throw-away PostgreSQL cluster for tests and CI.

``initdb`` in a temporary folder, ``pg_ctl start`` listening on a free loopback port
(and a unix socket in the same folder), trust authentication for the one user
``siamkit``; stopped and deleted at the end. PostgreSQL refuses to run as root, so as
root the cluster belongs to the ``postgres`` user (Debian's package creates it), whose
folder is made enterable for it.

Run as a script it starts a cluster, prints its URL and waits for SIGTERM / SIGINT:
``python tests/postgres_cluster.py`` (``.ci/run`` uses the pytest fixture instead).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["Cluster", "External", "find_binaries", "drop_database"]

USER = "siamkit"


def find_binaries() -> Path | None:
    """The folder of initdb / pg_ctl / postgres: on PATH, or Debian's newest version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running throw-away cluster.

    Args:
        bindir: the PostgreSQL binaries (default: :func:`find_binaries`).
        durable: fsync as a production server does (for benchmarks); tests run without
            (a crash of the server process still loses nothing committed: the OS keeps its writes).
    """

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        bindir = bindir or find_binaries()
        self.durable = durable
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="siamkit-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("as root the cluster needs a 'postgres' user (Debian's postgresql package makes one)") from None
            self.user = "postgres"
            shutil.chown(self.root, self.user)
            self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / tool), *args]
        r = subprocess.run(cmd, user=self.user, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}")

    @property
    def url(self) -> str:
        """The URL of the default database ``postgres``."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server (and wait until it accepts connections)."""
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                "-c max_connections=200 -c shared_buffers=64MB" + ("" if self.durable else " -c fsync=off -c full_page_writes=off"))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: like a crash; the data stays)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0, mode: str = "immediate") -> None:
        """Stop (like a crash by default), stay down ``down_seconds``, start again."""
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        base, _, rest = self.url.rpartition("/")
        query = rest.partition("?")[2]
        return f"{base}/{name}" + (f"?{query}" if query else "")

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class External:
    """A server someone else runs (``SIAMKIT_TEST_POSTGRES_URL``): new databases only.

    Args:
        url: a URL whose user may CREATE DATABASE.
    """

    restart = None  # tests that restart the server skip on an external one

    def __init__(self, url: str) -> None:
        self.url = url

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        return Cluster.new_database(self)  # type: ignore[arg-type]

    def destroy(self) -> None:
        """Nothing: the server is not ours."""


def drop_database(server_url: str, url: str) -> None:
    """Drop a database :meth:`Cluster.new_database` made (connections to it are ended).

    Args:
        server_url: a URL of another database on the same server.
        url: the database to drop.
    """
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(server_url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    c = Cluster()
    print(c.url, flush=True)
    stop = False

    def handler(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        c.destroy()


if __name__ == "__main__":
    main()
