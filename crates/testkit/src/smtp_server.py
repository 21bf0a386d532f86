# The SMTP server behind the testkit's SmtpServer (smtp_server.rs): aiosmtpd's Controller on
# 127.0.0.1, keeping every message it receives as a folder of small text files (read back by
# `SmtpServer::messages`). It creates the ready file once it accepts connections, then runs
# until it is killed.
import argparse
import email
import email.policy
import os
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class KeepMessages:
    """Writes message N to the folder N/ of the mail folder: the envelope (`envelope_from`,
    `envelope_to`, one recipient a line), the headers as decoded by Python's email package
    (`from`, `to` with one address a line, `subject`), the text (`body`) and the message as
    received (`raw.eml`). The folder is written under another name and renamed when complete,
    so a reader never sees half a message."""

    def __init__(self, folder):
        self.folder = folder
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Two domains stand for a mailbox that does not exist and a server that is busy.
        if address.endswith("@refused.example"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if address.endswith("@deferred.example"):
            return "451 4.3.0 <%s>: Temporary lookup failure, try again later" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            number = self.count
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        files = {
            "envelope_from": envelope.mail_from,
            "envelope_to": "\n".join(envelope.rcpt_tos),
            "from": str(message["From"] or ""),
            "to": "\n".join(str(address) for address in message["To"].addresses)
            if message["To"]
            else "",
            "subject": str(message["Subject"] or ""),
            # Python keeps the CRLF line ends of the wire in the text.
            "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
        }
        partial = os.path.join(self.folder, "%d.partial" % number)
        os.mkdir(partial)
        for name, text in files.items():
            with open(os.path.join(partial, name), "w", encoding="utf-8") as file:
                file.write(text)
        with open(os.path.join(partial, "raw.eml"), "wb") as file:
            file.write(raw)
        os.rename(partial, os.path.join(self.folder, str(number)))
        return "250 2.0.0 Ok: queued as %d" % number


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        accepted = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # handled=False: aiosmtpd answers a refusal with 535 itself (handled=True would mean the
        # authenticator already answered, and the client would wait forever).
        return AuthResult(success=accepted, handled=False)

    return authenticate


def server_tls_context(arguments):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(arguments.certificate, arguments.key)
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mail-folder", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--security", choices=["starttls", "tls", "plain"], required=True)
    parser.add_argument("--certificate")
    parser.add_argument("--key")
    parser.add_argument("--user")
    # The password comes from the environment, as a real server would keep it off `ps`.
    arguments = parser.parse_args()

    options = {}
    if arguments.security == "starttls":
        options["tls_context"] = server_tls_context(arguments)
        options["require_starttls"] = True
    elif arguments.security == "tls":
        options["ssl_context"] = server_tls_context(arguments)
    if arguments.user is not None:
        options["authenticator"] = authenticator_for(
            arguments.user, os.environ["FERRY_SMTP_SERVER_PASSWORD"]
        )
        options["auth_required"] = True
        # aiosmtpd counts only STARTTLS as TLS; over implicit TLS the password is protected too.
        options["auth_require_tls"] = arguments.security == "starttls"
    controller = Controller(
        KeepMessages(arguments.mail_folder),
        hostname="127.0.0.1",
        port=arguments.port,
        server_hostname="localhost",
        **options,
    )
    controller.start()
    open(arguments.ready_file, "w").close()
    threading.Event().wait()


main()
