.PHONY: proto build test ci

proto:
	go generate ./proto

build:
	CGO_ENABLED=0 go build -o bin/ ./cmd/...

test:
	go test ./...

ci:
	.ci/run
