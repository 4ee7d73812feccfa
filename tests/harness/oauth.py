"""Dovecot set up the ways the authentication tests need, and an OAuth2
token endpoint for it to ask.

- TunedDovecot: the harness Dovecot with lines of its configuration
  replaced or added (auth mechanisms, capabilities, TLS limits, passdbs),
  nothing else changed.  auth_debug makes the auth process log each
  request, so tests can tell LOGIN from AUTHENTICATE PLAIN on the server
  side: imap-login hands a LOGIN command to auth as one AUTH line carrying
  the response ("resp=<hidden>"), while AUTHENTICATE PLAIN without SASL-IR
  (what libetpan sends) arrives as an AUTH line without it and a CONT line.
- Introspection: a tiny HTTP server answering RFC 7662 token introspection
  (POST token=...) from a table of valid tokens.  Dovecot 2.3's oauth2
  passdb asks it (introspection_mode = post), which is how a mail provider
  checks the OAuth2 access tokens of SASL XOAUTH2 logins.
"""

import http.server
import json
import os
import re
import threading
import urllib.parse

from . import dovecot


class TunedDovecot(dovecot.Dovecot):
    """replace: [(old, new)] applied to the harness configuration (each old
    must be there); extra: lines appended; files: {name: text} written next
    to dovecot.conf before it starts (e.g. an oauth2 passdb config)."""

    def __init__(self, *args, replace=(), extra=(), files=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.replace, self.extra, self.files = list(replace), list(extra), dict(files or {})

    def path(self, name):
        return os.path.join(self.root, name)

    def _config(self):
        conf = super()._config()
        for old, new in self.replace:
            if old not in conf:
                raise dovecot.DovecotError("no %r in the harness configuration" % old)
            conf = conf.replace(old, new)
        return conf + "".join(line + "\n" for line in self.extra)

    def start(self, timeout=15):
        os.makedirs(self.root, exist_ok=True)
        for name, text in self.files.items():
            with open(self.path(name), "w") as f:
                f.write(text)
            os.chmod(self.path(name), 0o644)
        return super().start(timeout)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def auth_requests(self):
        """What auth_debug logged of each login attempt: a list of
        ("LOGIN" | "AUTHENTICATE", mechanism) in order.  An AUTH line with
        an initial response and no CONT after it is a LOGIN command (or
        SASL-IR); one followed by CONT is an AUTHENTICATE exchange."""
        out = []
        for line in self.log().splitlines():
            m = re.search(r"client in: AUTH\t\d+\t(\S+)\t(.*)$", line)
            if m:
                out.append(["LOGIN" if "resp=" in m.group(2) else "AUTHENTICATE",
                            m.group(1)])
            elif "client in: CONT" in line and out:
                out[-1][0] = "AUTHENTICATE"
        return [tuple(x) for x in out]


class Introspection:
    """tokens: {access token: user name}.  Everything the server was asked
    is in .asked (tokens, in order)."""

    def __init__(self, tokens):
        self.tokens = dict(tokens)
        self.asked = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                owner.asked.append(token)
                user = owner.tokens.get(token)
                body = {"active": True, "username": user} if user else {"active": False}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d/introspect" % self.httpd.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def dovecot_conf(self):
        """The oauth2 passdb configuration (dovecot-oauth2.conf.ext) for it."""
        return ("introspection_url = %s\n"
                "introspection_mode = post\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n" % self.url)
