package rpcerr

import (
	"context"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A request that does not decode (malformed protobuf, or a string field
// that is not UTF-8, which some protobuf libraries send with only a
// warning) is the caller's fault: INVALID_ARGUMENT. grpc-go answers
// INTERNAL, and writes that status the moment its codec fails, before any
// interceptor or handler can change it. So the services registered through
// Registrar hand the codec an undecoded box instead of the request; the
// codec from ServerCodec decodes into the box's request and keeps the
// error there instead of failing, and the wrapped handler answers it.
// A server must use both.

// Registrar wraps r so that every service registered through it answers a
// request that does not decode with INVALID_ARGUMENT. The server must run
// ServerCodec: without it, every call of those services fails (grpc's own
// codec cannot decode into the box).
func Registrar(r grpc.ServiceRegistrar) grpc.ServiceRegistrar { return decodeRegistrar{r} }

// ServerCodec is the server option that goes with Registrar.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(boxCodec{encoding.GetCodecV2("proto")})
}

type undecoded struct {
	m   any
	err error
}

type boxCodec struct{ encoding.CodecV2 }

func (c boxCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*undecoded)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	if b.err = c.CodecV2.Unmarshal(data, b.m); b.err != nil {
		if pm, ok := b.m.(proto.Message); ok {
			if f := notUTF8(data.Materialize(), pm.ProtoReflect().Descriptor()); f != "" {
				b.err = fmt.Errorf("%s is not UTF-8", f)
			}
		}
	}
	return nil
}

// notUTF8 names the first string field in the wire bytes b of a message
// md that does not hold UTF-8 ("" if none, or if b does not parse that
// far), as a path: "client_msg_id", "metadata.value".
func notUTF8(b []byte, md protoreflect.MessageDescriptor) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		fd := md.Fields().ByNumber(num)
		if fd != nil && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[:n])
			switch {
			case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
				return string(fd.Name())
			case fd.Kind() == protoreflect.MessageKind:
				if f := notUTF8(v, fd.Message()); f != "" {
					return string(fd.Name()) + "." + f
				}
			}
		}
		b = b[n:]
	}
	return ""
}

// decodeInto receives into m through recv, and turns a decoding failure
// into INVALID_ARGUMENT naming the request's type.
func decodeInto(recv func(any) error, m any) error {
	b := &undecoded{m: m}
	if err := recv(b); err != nil {
		return err
	}
	if b.err == nil {
		return nil
	}
	name := "the request"
	if pm, ok := m.(proto.Message); ok {
		name = "the " + string(proto.MessageName(pm))
	}
	return status.Errorf(codes.InvalidArgument, "%s does not decode (%v); string fields must hold UTF-8, binary data goes in bytes fields", name, b.err)
}

type decodeRegistrar struct{ grpc.ServiceRegistrar }

func (d decodeRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	w := *desc
	w.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		h := m.Handler
		w.Methods[i] = grpc.MethodDesc{MethodName: m.MethodName,
			Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
				return h(srv, ctx, func(req any) error { return decodeInto(dec, req) }, in)
			}}
	}
	w.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, s := range desc.Streams {
		h := s.Handler
		w.Streams[i] = s
		w.Streams[i].Handler = func(srv any, stream grpc.ServerStream) error { return h(srv, decodeStream{stream}) }
	}
	d.ServiceRegistrar.RegisterService(&w, impl)
}

type decodeStream struct{ grpc.ServerStream }

func (s decodeStream) RecvMsg(m any) error { return decodeInto(s.ServerStream.RecvMsg, m) }
