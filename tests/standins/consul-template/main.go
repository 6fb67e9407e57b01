// Command consul-template is a TEST-ONLY stand-in for HashiCorp
// consul-template v0.19.0.
//
// The real binary cannot be obtained in the lab's build environment, so this
// program re-implements the subset of its command line, template language
// and runtime behaviour that the lab relies on, using only the Go standard
// library (text/template is also the engine the real tool is built on).
//
// Where the real v0.19.0 behaves surprisingly (exit codes, SIGTERM being
// ignored, template commands not running under a shell, ...) the stand-in
// deliberately behaves the same way, so that the lab cannot pass against the
// stand-in and then fail against the real tool. See README.md for the list
// of implemented flags and functions and the known differences.
package main

import (
	"os"
)

func main() {
	c := newCLI(os.Stdin, os.Stdout, os.Stderr)
	c.notifySignals = true
	os.Exit(c.run(os.Args[1:]))
}
