package slogadapt

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// hashicorp/raft logs some values as hclog.Fmt (a format and its
// arguments); they come out formatted, not as the format verb.
func TestHCLogFormatsFmtValues(t *testing.T) {
	var buf bytes.Buffer
	l := HCLog(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	l.Info("initial configuration", "servers", hclog.Fmt("%+v", []struct{ ID string }{{"a1"}}), "index", 3)
	out := buf.String()
	if strings.Contains(out, "%+v") || !strings.Contains(out, "servers=[{ID:a1}]") || !strings.Contains(out, "index=3") {
		t.Fatalf("logged %q", out)
	}
}
