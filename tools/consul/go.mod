module github.com/meshgate/meshgate/tools/consul

go 1.26.8
