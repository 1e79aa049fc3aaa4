package router

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/seqd/seqd/internal/grpcconn"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// gatewayMessages serves the Messages API by routing every call to the
// owning shard through the embedded client.
type gatewayMessages struct {
	seqdv1.UnimplementedMessagesServer
	g *Gateway
}

// msgs returns the routed client and a context that names the front end
// (for the store's per-client rate limits).
func (s *gatewayMessages) msgs(ctx context.Context) (*Messages, context.Context, error) {
	c, err := s.g.c()
	if err != nil {
		return nil, ctx, err
	}
	if p, ok := peer.FromContext(ctx); ok {
		ctx = withClient(ctx, p.Addr.String())
	}
	return c.Messages(), ctx, nil
}

// route is the shape of every unary Messages call through the gateway.
func route[Req, Resp any](ctx context.Context, s *gatewayMessages, req Req, call func(*Messages, context.Context, Req) (Resp, error)) (Resp, error) {
	m, ctx, err := s.msgs(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return call(m, ctx, req)
}

func (s *gatewayMessages) Send(ctx context.Context, r *seqdv1.SendRequest) (*seqdv1.SendResponse, error) {
	return route(ctx, s, r, (*Messages).Send)
}
func (s *gatewayMessages) Sync(ctx context.Context, r *seqdv1.SyncRequest) (*seqdv1.SyncResponse, error) {
	return route(ctx, s, r, (*Messages).Sync)
}
func (s *gatewayMessages) MarkRead(ctx context.Context, r *seqdv1.MarkReadRequest) (*seqdv1.MarkReadResponse, error) {
	return route(ctx, s, r, (*Messages).MarkRead)
}
func (s *gatewayMessages) Unread(ctx context.Context, r *seqdv1.UnreadRequest) (*seqdv1.UnreadResponse, error) {
	return route(ctx, s, r, (*Messages).Unread)
}
func (s *gatewayMessages) History(ctx context.Context, r *seqdv1.HistoryRequest) (*seqdv1.HistoryResponse, error) {
	return route(ctx, s, r, (*Messages).History)
}
func (s *gatewayMessages) Recall(ctx context.Context, r *seqdv1.RecallRequest) (*seqdv1.RecallResponse, error) {
	return route(ctx, s, r, (*Messages).Recall)
}
func (s *gatewayMessages) Delete(ctx context.Context, r *seqdv1.DeleteRequest) (*seqdv1.DeleteResponse, error) {
	return route(ctx, s, r, (*Messages).Delete)
}
func (s *gatewayMessages) CreateGroup(ctx context.Context, r *seqdv1.CreateGroupRequest) (*seqdv1.CreateGroupResponse, error) {
	return route(ctx, s, r, (*Messages).CreateGroup)
}
func (s *gatewayMessages) AddMembers(ctx context.Context, r *seqdv1.AddMembersRequest) (*seqdv1.AddMembersResponse, error) {
	return route(ctx, s, r, (*Messages).AddMembers)
}
func (s *gatewayMessages) RemoveMembers(ctx context.Context, r *seqdv1.RemoveMembersRequest) (*seqdv1.RemoveMembersResponse, error) {
	return route(ctx, s, r, (*Messages).RemoveMembers)
}
func (s *gatewayMessages) GetGroup(ctx context.Context, r *seqdv1.GetGroupRequest) (*seqdv1.GetGroupResponse, error) {
	return route(ctx, s, r, (*Messages).GetGroup)
}
func (s *gatewayMessages) SyncGroup(ctx context.Context, r *seqdv1.SyncGroupRequest) (*seqdv1.SyncGroupResponse, error) {
	return route(ctx, s, r, (*Messages).SyncGroup)
}
func (s *gatewayMessages) GroupHistory(ctx context.Context, r *seqdv1.GroupHistoryRequest) (*seqdv1.GroupHistoryResponse, error) {
	return route(ctx, s, r, (*Messages).GroupHistory)
}

// Subscribe relays a replica's stream. If the replica goes away the stream
// ends with its error; the device reconnects from its checkpoint.
func (s *gatewayMessages) Subscribe(r *seqdv1.SubscribeRequest, out seqdv1.Messages_SubscribeServer) error {
	m, ctx, err := s.msgs(out.Context())
	if err != nil {
		return err
	}
	in, err := m.Subscribe(ctx, r)
	if err != nil {
		return err
	}
	// Accepted by a replica: say so now, not with the first message, so a
	// client waiting for the header (as router.Messages does) hears at once.
	if err := out.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := grpcconn.SendWithin(out, msg); err != nil {
			return err // ends the stream to the replica too (ctx)
		}
	}
}
