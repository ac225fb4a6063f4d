"""Tests of the WebSocket routes of flask_app.py, against a real server.

Run them with::

    cd examples/wsgi && python3 -m unittest test_flask_app

Flask's test client has no socket a WebSocket could take over: the tests
serve the application with werkzeug's server (what ``flask run`` uses), on a
free port, in a thread, and connect with :func:`syncws.connect`.
"""

import json
import threading
import unittest

from werkzeug.serving import make_server

import syncws
from flask_app import app


class WebSocketRouteTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = make_server("127.0.0.1", 0, app, threaded=True)
        cls.server_thread = threading.Thread(target=cls.server.serve_forever)
        cls.server_thread.start()
        cls.url = f"http://127.0.0.1:{cls.server.server_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.server_thread.join()

    def ws_url(self, path):
        return self.url.replace("http", "ws", 1) + path

    def test_echo(self):
        with syncws.connect(self.ws_url("/ws/echo")) as websocket:
            websocket.send("hello")
            self.assertEqual(websocket.recv(timeout=10), "hello")

    def test_anonymous_users_are_refused_with_401(self):
        with self.assertRaises(syncws.InvalidStatusCode) as refused:
            syncws.connect(self.ws_url("/ws/whoami"))
        self.assertEqual(refused.exception.status_code, 401)

    def test_the_server_pushes_ticks_at_the_pace_asked(self):
        with syncws.connect(self.ws_url("/ws/ticker")) as websocket:
            websocket.send(json.dumps({"interval": 0.05}))
            ticks = [json.loads(websocket.recv(timeout=10))["tick"] for _ in range(3)]
            self.assertEqual(ticks, list(range(ticks[0], ticks[0] + 3)))
            websocket.send("not json")
            answers = (json.loads(websocket.recv(timeout=10)) for _ in range(100))
            self.assertIn("error", next(answer for answer in answers if "tick" not in answer))
