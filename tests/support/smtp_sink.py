"""A real SMTP server (aiosmtpd) for the tests: every message it accepts is parsed with Python's
email package and written to DIR/<n>.json (recipients, subject, text and HTML parts), atomically.

Usage: smtp_sink.py HOST PORT DIR
"""

import asyncio
import itertools
import json
import os
import sys
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        part = lambda kind: (message.get_body((kind,)) or message).get_content()
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "text": part("plain"),
            "html": part("html"),
        }
        path = os.path.join(self.directory, f"{next(self.counter):06}.json")
        with open(path + ".tmp", "w") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        return "250 OK"


def main():
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    controller = Controller(Sink(directory), hostname=host, port=port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.new_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
