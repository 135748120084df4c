module github.com/edgeward/edgeward/agent

go 1.26.8

require (
	connectrpc.com/connect v1.21.1 // indirect
	github.com/edgeward/edgeward/proto v0.0.0-00010101000000-000000000000
	github.com/kardianos/service v1.3.0 // indirect
	github.com/shirou/gopsutil/v4 v4.26.10 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/edgeward/edgeward/proto => ../proto
