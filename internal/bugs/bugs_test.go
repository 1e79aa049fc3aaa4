package bugs

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestKnownBugsAreDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range Known {
		if b.Name == "" || b.Where == "" || b.Breaks == "" || b.Doc == "" || seen[b.Name] {
			t.Errorf("incomplete or repeated entry %+v", b)
		}
		seen[b.Name] = true
		if got, ok := Lookup(b.Name); !ok || got != b {
			t.Errorf("Lookup(%q) = %+v, %v", b.Name, got, ok)
		}
	}
	if _, ok := Lookup("no-such-bug"); ok {
		t.Error("Lookup found an unknown bug")
	}
}

// The child reports what this build makes of SEQD_BUG and whether it serves
// the clock failpoint.
func TestHelperChild(t *testing.T) {
	if os.Getenv("SEQJ_BUGS_CHILD") == "" {
		t.Skip("helper for TestEnvSelectsBugs")
	}
	mux := http.NewServeMux()
	RegisterHTTP(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, ClockPath+"?rate=1.03", nil))
	fmt.Printf("compiled=%v enabled=%v other=%v clock=%d\n", Compiled, Enabled(AckBeforeRaiseCommit), Enabled(ServeMovedSectionEarly), rec.Code)
}

func TestEnvSelectsBugs(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$", "-test.v")
	cmd.Env = append(os.Environ(), "SEQJ_BUGS_CHILD=1", EnvBugs+"="+AckBeforeRaiseCommit)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := "compiled=false enabled=false other=false clock=404"
	if Compiled {
		want = "compiled=true enabled=true other=false clock=200"
	}
	if !strings.Contains(string(out), want) {
		t.Fatalf("child said:\n%s\nwant %q", out, want)
	}
}
