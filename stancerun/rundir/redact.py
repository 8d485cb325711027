"""Secrets kept out of every file of a run or sweep directory: a storage URL's password, wherever a
URL carries one (its userinfo, a query parameter), and the values of ``--storage`` and ``--api-key``
in a recorded command line. Shown as ``***``; a URL's public form drops them."""

from __future__ import annotations

import re

#: Query parameters whose value is a secret, compared case-insensitively: the names database drivers
#: and services use for a password or token (libpq's sslpassword, MySQL's passwd, ODBC's pwd, ...);
#: besides these, any name holding "password", "secret" or "token" (client_secret, auth_token, ...).
SECRET_KEYS = frozenset({"password", "passwd", "pass", "pwd", "sslpassword", "secret", "token", "api_key", "apikey",
                         "access_key", "secret_key", "auth", "key"})
#: Options whose value is a secret, or a URL that may hold one, in a command line.
SECRET_OPTIONS = ("--storage", "--api-key")
#: The environment variable that carries a storage URL with its password to the workers a sweep
#: starts: argv is readable by every user of the machine (/proc/PID/cmdline, ps), a process's
#: environment only by its owner. One variable for the whole URL, not PGPASSWORD: it serves every
#: database (SQLite or MySQL query parameters too), not PostgreSQL alone.
STORAGE_URL_ENV = "STANCERUN_STORAGE_URL"

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<head>[\w+.-]+://[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY = re.compile(r"(?P<head>[?&;](?P<key>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")


def secret_key(name: str) -> bool:
    name = name.lower()
    return name in SECRET_KEYS or any(word in name for word in ("password", "secret", "token"))


def redact_url(text: str) -> str:
    """``text`` with each URL's password, in its userinfo or its query, shown as ``***``."""
    if "://" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY.sub(lambda m: m["head"] + (HIDDEN if secret_key(m["key"]) else m["value"]), text)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to record: ``--storage URL``, ``--api-key KEY`` (either spelling) and any
    URL's password as ``***``."""
    out = []
    for i, arg in enumerate(argv):
        option = arg.split("=", 1)[0]
        if i and argv[i - 1] in SECRET_OPTIONS:
            out.append(HIDDEN)
        elif option in SECRET_OPTIONS and "=" in arg:
            out.append(f"{option}={HIDDEN}")
        else:
            out.append(redact_url(arg))
    return out


def public_url(url: str) -> str:
    """A database URL without its password (userinfo or query parameter): what may be written to
    disk, shown, and put in a worker's argv."""
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(url)  # URL.set(password=None) keeps the password: build it again without
    query = {key: value for key, value in parsed.query.items() if not secret_key(key)}
    return URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                      query).render_as_string(hide_password=False)


def with_password(url: str, environ=None) -> str:
    """``url``, or the URL in ``STANCERUN_STORAGE_URL`` when that is the same database with its
    password (a worker started by `stancerun run --workers N` gets it there, not in argv)."""
    import os

    secret = (os.environ if environ is None else environ).get(STORAGE_URL_ENV)
    if not secret or "://" not in url:
        return url
    try:
        return secret if public_url(secret) == public_url(url) else url
    except Exception:  # not a database URL: nothing to add to it
        return url
