// Command stopclusters stops the private PostgreSQL clusters that this
// checkout's tests and benchmarks started and left running for the next
// run (`make test-db-stop`). Their data is thrown away with them only when
// the system's temporary directory is cleaned.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/edgeward/edgeward/controlplane/internal/db/dbtest"
	"github.com/edgeward/edgeward/controlplane/internal/db/pgcluster"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stopped := 0
	for _, dir := range dbtest.PrivateClusterDirs() {
		ok, err := pgcluster.StopIn(ctx, dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stop the test cluster in %s: %v\n", dir, err)
			os.Exit(1)
		}
		if ok {
			stopped++
			fmt.Printf("stopped the private test PostgreSQL cluster in %s (remove the directory to throw its data away)\n", dir)
		}
	}
	if stopped == 0 {
		fmt.Println("no private test PostgreSQL cluster of this checkout is running")
	}
}
