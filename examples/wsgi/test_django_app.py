"""Tests of the WebSocket views of django_app.py, with Django's LiveServerTestCase.

Run them with::

    cd examples/wsgi && python3 -m unittest test_django_app

``LiveServerTestCase`` starts the project on a free port in a thread; its
usual server can't hand sockets over, so ``server_thread_class`` swaps in
one that can. Each test connects with :func:`syncws.connect`.
"""

import urllib.request

import django_app  # noqa: F401  (the settings, the views, the URLs)
from django.test import LiveServerTestCase

import syncws
from syncws.wsgi import django_live_server_thread


class WebSocketViewTests(LiveServerTestCase):
    server_thread_class = django_live_server_thread()
    databases = set()  # this project has no database

    def ws_url(self, path):
        return self.live_server_url.replace("http", "ws", 1) + path

    def test_echo(self):
        with syncws.connect(self.ws_url("/ws/echo")) as websocket:
            websocket.send("hello")
            self.assertEqual(websocket.recv(timeout=10), "hello")
            websocket.send(b"\x00\xff")
            self.assertEqual(websocket.recv(timeout=10), b"\x00\xff")

    def test_anonymous_users_are_refused_with_403(self):
        with self.assertRaises(syncws.InvalidStatusCode) as refused:
            syncws.connect(self.ws_url("/ws/whoami"))
        self.assertEqual(refused.exception.status_code, 403)

    def test_the_handler_sees_the_session(self):
        login = urllib.request.Request(self.live_server_url + "/login", data=b"user=alice", method="POST")
        cookie = urllib.request.urlopen(login, timeout=10).headers["Set-Cookie"].split(";")[0]
        with syncws.connect(self.ws_url("/ws/whoami"), extra_headers={"Cookie": cookie}) as websocket:
            self.assertEqual(websocket.recv(timeout=10), "hello alice")
