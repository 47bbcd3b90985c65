package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessSpec describes a process to run.
type ProcessSpec struct {
	Dir  string   // working directory; the log file <Dir>/<Name>.log goes here too
	Name string   // short name used in logs and the log file name
	Bin  string   // binary path
	Args []string // arguments
	Env  []string // added to the inherited environment (KEY=VALUE)
}

// Process is a running (or stopped) binary whose stdout and stderr go to
// LogPath. Stop and Start may be used to take it down and back.
type Process struct {
	ProcessSpec
	LogPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartProcess starts bin with args in dir and stops it on tb.Cleanup.
func StartProcess(tb TB, dir, name, bin string, args ...string) *Process {
	tb.Helper()
	return StartProcessSpec(tb, ProcessSpec{Dir: dir, Name: name, Bin: bin, Args: args})
}

// StartProcessSpec starts spec and stops it on tb.Cleanup; when the test
// has failed by then, the tail of the log is shown.
func StartProcessSpec(tb TB, spec ProcessSpec) *Process {
	tb.Helper()
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	p := &Process{ProcessSpec: spec, LogPath: filepath.Join(spec.Dir, spec.Name+".log")}
	if err := p.Start(); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	tb.Cleanup(func() {
		if failed(tb) {
			tb.Logf("--- tail of %s:\n%s", p.LogPath, p.Tail(40))
		}
		p.Stop(10 * time.Second)
	})
	return p
}

// Start starts the process again after Stop (or the first time). Output is
// appended to LogPath after a header line.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("harness: %s already running", p.Name)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	fmt.Fprintf(f, "=== harness: %s start %s %s\n", time.Now().Format(time.RFC3339Nano), p.Bin, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group so Kill reaches children; die with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("harness: start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Pid returns the process id, or 0 when never started.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Alive reports whether the process is running.
func (p *Process) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// Done is closed when the current run exits.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// ExitErr is the error of the last run's Wait (nil while running or after a
// clean exit).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILLs the process group.
// It returns nil when the process was not running, else its exit error
// (a termination by the signal counts as success).
func (p *Process) Stop(timeout time.Duration) error {
	if !p.Alive() {
		return nil
	}
	p.signal(syscall.SIGTERM, false)
	select {
	case <-p.Done():
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("harness: %s did not stop within %s, killed", p.Name, timeout)
	}
	// Leftover children in the group get no grace.
	p.signal(syscall.SIGKILL, true)
	err := p.ExitErr()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	return err
}

// Kill SIGKILLs the process group and waits for the exit.
func (p *Process) Kill() {
	if !p.Alive() {
		return
	}
	p.signal(syscall.SIGKILL, true)
	<-p.Done()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.signal(sig, false) }

func (p *Process) signal(sig syscall.Signal, group bool) error {
	pid := p.Pid()
	if pid == 0 {
		return errors.New("harness: not started")
	}
	if group {
		return syscall.Kill(-pid, sig)
	}
	return syscall.Kill(pid, sig)
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string { return TailFile(p.LogPath, n) }

// TailFile returns the last n lines of a file (or the read error).
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}
