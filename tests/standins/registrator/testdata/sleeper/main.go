// Command sleeper is the process of the containers the stand-in's tests start: it
// waits for a signal, then exits 0 on SIGTERM or SIGINT (a clean stop) and 3 on
// SIGUSR1 (a failure that is not a kill).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	got := make(chan os.Signal, 1)
	signal.Notify(got, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	if <-got == syscall.SIGUSR1 {
		os.Exit(3)
	}
}
