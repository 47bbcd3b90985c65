// Command pause waits for SIGTERM or SIGINT and exits 0. It is the
// end-to-end cluster's sandbox (pause) image and the program of its workload
// images: a static binary, so an image needs nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
