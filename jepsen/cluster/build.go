package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot finds the seqd source tree: the directory holding the go.mod
// of module github.com/seqd/seqd, searched upwards from dir.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/seqd/seqd\n") {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("cannot find the seqd source tree (go.mod of github.com/seqd/seqd) above the current directory; run from the repository or pass --src")
		}
		d = parent
	}
}

// Build compiles cmd/seqd from src into dir and returns the binary's path.
// With tags "seqdbugs" the binary can plant bugs and serves failpoints;
// release builds never can.
func Build(ctx context.Context, src, dir, tags string) (string, error) {
	name := "seqd"
	if tags != "" {
		name += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./cmd/seqd")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}
