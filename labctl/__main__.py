"""`labctl` and `python -m labctl`.

The verbs that converge run pyinfra in this process (labctl/converge.py), and pyinfra
reaches every host at once through gevent, which must patch the standard library
(sockets, threads, subprocesses) before anything else imports it. The patch costs
about 0.2 s of CPU (gevent's import), so only those verbs pay it: `status`, `verify`,
`token` and the others start without gevent.
"""

import sys

CONVERGING_VERBS = frozenset({"up", "apply", "scale", "down"})


def main() -> None:
    if CONVERGING_VERBS.intersection(sys.argv[1:]):
        from gevent import monkey

        monkey.patch_all()
    from labctl.cli import app

    app(prog_name="labctl")


if __name__ == "__main__":
    main()
