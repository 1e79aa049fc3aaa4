package rpcmetrics

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func family(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// Every method the server has is a handling_seconds series (code OK) from
// the start, at 0, and a call lands in that same series: a dashboard's
// rate() or an alert sees a method before its first call.
func TestEveryMethodHasASeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := NewServer(reg)
	gs := grpc.NewServer(s.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	s.Precreate(gs)

	want := map[string]bool{} // service/method
	streams := map[string]bool{}
	for svc, info := range gs.GetServiceInfo() {
		for _, m := range info.Methods {
			want[svc+"/"+m.Name] = true
			if m.IsClientStream || m.IsServerStream {
				streams[svc+"/"+m.Name] = true
			}
		}
	}
	if !want["grpc.health.v1.Health/Check"] || len(streams) == 0 {
		t.Fatalf("test needs a unary Check and a stream method, has %v", want)
	}

	series := family(t, reg, "seqd_rpc_server_handling_seconds")
	if len(series) != len(want) {
		t.Errorf("%d handling_seconds series at start, want %d (one per method)", len(series), len(want))
	}
	for _, m := range series {
		l := labels(m)
		if !want[l["service"]+"/"+l["method"]] || l["code"] != "OK" {
			t.Errorf("unexpected series %v", l)
		}
		if n := m.GetHistogram().GetSampleCount(); n != 0 {
			t.Errorf("%v at start: %d calls", l, n)
		}
		delete(want, l["service"]+"/"+l["method"])
	}
	if len(want) > 0 {
		t.Errorf("no handling_seconds series at start for %v", want)
	}

	inflight := family(t, reg, "seqd_rpc_server_inflight")
	if len(inflight) != len(streams) {
		t.Errorf("%d inflight series at start, want %d (one per stream method)", len(inflight), len(streams))
	}
	for _, m := range inflight {
		l := labels(m)
		if !streams[l["service"]+"/"+l["method"]] || m.GetGauge().GetValue() != 0 {
			t.Errorf("unexpected inflight series %v = %v", l, m.GetGauge().GetValue())
		}
	}

	ok := func(context.Context, any) (any, error) { return nil, nil }
	if _, err := s.Unary()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}, ok); err != nil {
		t.Fatal(err)
	}
	after := family(t, reg, "seqd_rpc_server_handling_seconds")
	if len(after) != len(series) {
		t.Errorf("one call to Check left %d series, %d before it: the call must land in the pre-created series", len(after), len(series))
	}
	for _, m := range after {
		if l := labels(m); l["method"] == "Check" && m.GetHistogram().GetSampleCount() != 1 {
			t.Errorf("%v after one call: %d", l, m.GetHistogram().GetSampleCount())
		}
	}
}

// A handler's bare context error is counted with the code the client
// gets, not Unknown (which alerts as a fault of seqd's own).
func TestCodeOfContextErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("next: %w", context.Canceled), codes.Canceled},
		{status.Error(codes.Internal, "badger: corrupt"), codes.Internal},
		{status.Error(codes.DeadlineExceeded, "deadline"), codes.DeadlineExceeded},
		{errors.New("boom"), codes.Unknown},
	} {
		if got := code(c.err); got != c.want {
			t.Errorf("code(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
