package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// renderResult says whether contents differed from what was on disk
// (didRender) and whether the template was renderable at all
// (wouldRender, always true once render is reached).
type renderResult struct {
	didRender   bool
	wouldRender bool
}

// render writes contents to path unless the file already holds exactly
// these bytes (manager/renderer.go Render). In dry mode the changed contents
// are printed to dryOut as "> path\n<contents>" instead, and nothing is
// written.
//
// A missing file reads as no bytes, and bytes.Equal(nil, []byte{}) is true:
// a template that renders to nothing, for a destination that does not exist,
// is "up to date". Nothing is written and no command runs (both releases).
func render(path string, contents []byte, keepMode bool, dry bool, dryOut io.Writer) (renderResult, error) {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return renderResult{}, fmt.Errorf("failed reading file: %w", err)
	}
	if bytes.Equal(existing, contents) {
		return renderResult{didRender: false, wouldRender: true}, nil
	}
	if dry {
		fmt.Fprintf(dryOut, "> %s\n%s", path, contents)
	} else if err := atomicWrite(path, contents, keepMode); err != nil {
		return renderResult{}, fmt.Errorf("failed writing file: %w", err)
	}
	return renderResult{didRender: true, wouldRender: true}, nil
}

// atomicWrite writes contents to a temporary file next to path and renames
// it over path, so readers (nginx) never see a half-written file. The
// parent directory is created (0755) if needed.
//
// The mode: v0.19.0 always applies the template's perms, 0644 from the
// command line. v0.19.4+ (GH-1037) keeps the mode of the file it replaces,
// and uses 0644 for a new file. Either way the temporary file is chmod-ed,
// so the umask plays no part.
func atomicWrite(path string, contents []byte, keepMode bool) error {
	if path == "" {
		return errors.New("missing destination")
	}
	parent := filepath.Dir(path)
	if _, err := os.Stat(parent); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(parent, 0755); err != nil {
			return err
		}
	}

	f, err := os.CreateTemp(parent, "")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after a successful rename

	if _, err := f.Write(contents); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	perms := defaultFilePerms
	if keepMode {
		current, err := os.Stat(path)
		switch {
		case err == nil:
			perms = current.Mode()
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	if err := os.Chmod(f.Name(), perms); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
