// Command pause is the real node's pod sandbox process: it holds a pod's namespaces open until
// the runtime stops it. No registry is reachable for registry.k8s.io/pause, so the testbed builds
// this static binary (build.sh) and `up` wraps it in a one-file local image (ociimage.py).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			// Reap whatever this process inherited, as the upstream pause does.
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
