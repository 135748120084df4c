// Command edgeward-controlplane is the Edgeward control plane: one binary that
// serves the tenant REST API and the agent RPC, migrates its database, and
// runs the operator commands. Run it without arguments for the command list.
package main

import (
	"os"

	"github.com/edgeward/edgeward/controlplane/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
