// Package rpcmetrics times every gRPC call a seqd node serves.
package rpcmetrics

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server holds the server-side RPC metrics of one node.
type Server struct {
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
	cache    sync.Map // key{method, code} -> prometheus.Observer
}

type key struct {
	method string
	code   codes.Code
}

// NewServer registers seqd_rpc_server_* metrics with reg.
func NewServer(reg prometheus.Registerer) *Server {
	s := &Server{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "seqd", Subsystem: "rpc", Name: "server_handling_seconds",
			Help:    "Time to handle a gRPC call (streams: the whole stream), by service, method and status code.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1, 5},
		}, []string{"service", "method", "code"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "seqd", Subsystem: "rpc", Name: "server_inflight",
			Help: "gRPC calls being handled now, by service and method.",
		}, []string{"service", "method"}),
	}
	reg.MustRegister(s.duration, s.inflight)
	return s
}

func split(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

func (s *Server) observe(method string, err error, d time.Duration) {
	k := key{method, code(err)}
	o, ok := s.cache.Load(k)
	if !ok {
		svc, m := split(method)
		o, _ = s.cache.LoadOrStore(k, s.duration.WithLabelValues(svc, m, k.code.String()))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

// code is the status code the client gets for err. A handler that returns
// a bare context error (the caller's deadline passed, or it cancelled) is
// answered DeadlineExceeded or Canceled by grpc-go; status.Code would say
// Unknown, which the alerts count as a fault of seqd's own.
func code(err error) codes.Code {
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return status.FromContextError(err).Code()
}

// ServiceInfoProvider is what Precreate reads; *grpc.Server is one.
type ServiceInfoProvider interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}

// Precreate gives every method registered on gs its handling_seconds series
// with code OK (and each stream method its inflight series) at 0, so that a
// dashboard or an alert sees a method before its first call: rate() over a
// missing series is no data, not 0. Call it once the services are
// registered. Other codes still appear on their first use: one series per
// method and code would be 17 times as many, mostly never used.
func (s *Server) Precreate(gs ServiceInfoProvider) {
	for svc, info := range gs.GetServiceInfo() {
		for _, m := range info.Methods {
			k := key{"/" + svc + "/" + m.Name, codes.OK}
			s.cache.LoadOrStore(k, s.duration.WithLabelValues(svc, m.Name, k.code.String()))
			if m.IsClientStream || m.IsServerStream {
				s.inflight.WithLabelValues(svc, m.Name)
			}
		}
	}
}

// Unary is the unary server interceptor.
func (s *Server) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		s.observe(info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// Stream is the stream server interceptor.
func (s *Server) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		svc, m := split(info.FullMethod)
		g := s.inflight.WithLabelValues(svc, m)
		g.Inc()
		defer g.Dec()
		start := time.Now()
		err := h(srv, ss)
		s.observe(info.FullMethod, err, time.Since(start))
		return err
	}
}

// ServerOptions returns the interceptor options for grpc.NewServer.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.Unary()), grpc.ChainStreamInterceptor(s.Stream())}
}
