module github.com/edgeward/edgeward/proto

go 1.26.8
