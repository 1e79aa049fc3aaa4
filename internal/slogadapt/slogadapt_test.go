package slogadapt

import (
	"bytes"
	"fmt"
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
	servers := []struct{ ID string }{{"a1"}}
	l.Info("initial configuration", "servers", hclog.Fmt("%+v", servers), "index", 3)
	out := buf.String()
	if want := "servers=" + fmt.Sprintf("%+v", servers); strings.Contains(out, "%+v") || !strings.Contains(out, want) || !strings.Contains(out, "index=3") {
		t.Fatalf("logged %q", out)
	}
}
