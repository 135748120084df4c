// Command edgeward-agent is the Edgeward endpoint agent. It enrolls with a
// one-time token, keeps a durable queue of reports and delivers them to the
// control plane over mutual TLS. This build carries the version command; the
// agent's service, enrollment and queue land with the agent issue.
package main

import (
	"fmt"
	"os"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println("edgeward-agent", Version)
		return
	}
	fmt.Fprintln(os.Stderr, "Usage: edgeward-agent version")
	os.Exit(2)
}
