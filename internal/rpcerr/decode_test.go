package rpcerr_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/seqd/seqd/internal/rpcerr"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// rawCodec sends the bytes it is given as they are, so a test can send
// what a well-behaved protobuf library never would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

type unimplemented struct {
	seqdv1.UnimplementedMessagesServer
}

// A request that does not decode is the caller's fault: INVALID_ARGUMENT
// naming the message, on unary methods and streams alike; one that does
// reaches the service.
func TestUndecodableRequestsAreInvalidArgument(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpcerr.ServerCodec())
	seqdv1.RegisterMessagesServer(rpcerr.Registrar(srv), unimplemented{})
	healthpb.RegisterHealthServer(srv, health.NewServer()) // not wrapped: the codec decodes its requests as grpc's does
	go srv.Serve(ln)
	defer srv.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	fields := (&seqdv1.SendRequest{}).ProtoReflect().Descriptor().Fields()
	field := func(b []byte, name string) []byte {
		return protowire.AppendTag(b, fields.ByName(protoreflect.Name(name)).Number(), protowire.BytesType)
	}
	cmid := protowire.AppendString(field(nil, "client_msg_id"), "\xff\xfe")
	// metadata is a map: each entry is a message of key (1) and value (2).
	entry := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "k")
	entry = protowire.AppendString(protowire.AppendTag(entry, 2, protowire.BytesType), "v\xc3")
	meta := protowire.AppendBytes(field(protowire.AppendString(field(nil, "client_msg_id"), "fine"), "metadata"), entry)
	for _, tt := range []struct {
		name string
		body []byte
		says string
	}{
		// SubscribeRequest has no string field: to it these are unknown
		// fields, and fine.
		{"string not UTF-8", cmid, "client_msg_id is not UTF-8"},
		{"map value not UTF-8", meta, "metadata.value is not UTF-8"},
		{"truncated", []byte{0x0a, 0xff}, "cannot parse"},
		{"bad wire type", []byte{0x0f}, "cannot parse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out seqdv1.SendResponse
			err := cc.Invoke(ctx, seqdv1.Messages_Send_FullMethodName, tt.body, &out, grpc.ForceCodec(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "seqd.v1.SendRequest does not decode") || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("Send: %v, want INVALID_ARGUMENT naming seqd.v1.SendRequest and saying %q", err, tt.says)
			}
			if tt.says != "cannot parse" {
				return
			}
			desc := &grpc.StreamDesc{ServerStreams: true}
			st, err := cc.NewStream(ctx, desc, seqdv1.Messages_Subscribe_FullMethodName, grpc.ForceCodec(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.SendMsg(tt.body); err != nil {
				t.Fatal(err)
			}
			st.CloseSend()
			var resp seqdv1.SubscribeResponse
			if err := st.RecvMsg(&resp); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "seqd.v1.SubscribeRequest does not decode") {
				t.Fatalf("Subscribe: %v, want INVALID_ARGUMENT naming seqd.v1.SubscribeRequest", err)
			}
		})
	}
	_, err = seqdv1.NewMessagesClient(cc).Send(ctx, &seqdv1.SendRequest{Sender: 1})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("a request that decodes: %v, want the service's own answer (UNIMPLEMENTED)", err)
	}
	if r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("a service registered without the wrapper: %v %v", r, err)
	}
}
