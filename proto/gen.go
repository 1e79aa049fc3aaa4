// Package proto holds seqd's protobuf definitions and the generated Go code.
//
// Regenerate with `make proto` or `go generate ./proto`. It uses Debian's
// protoc (protobuf-compiler) and the plugin versions pinned here.
package proto

//go:generate env GOFLAGS= GOBIN=$PWD/.bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//go:generate env GOFLAGS= GOBIN=$PWD/.bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//go:generate sh -c "protoc -I . --plugin=protoc-gen-go=.bin/protoc-gen-go --plugin=protoc-gen-go-grpc=.bin/protoc-gen-go-grpc --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. seqd/v1/*.proto seqd/cluster/v1/*.proto"
