module github.com/edgeward/edgeward/agent

go 1.26.8
