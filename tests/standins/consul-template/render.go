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
// these bytes. In dry mode the changed contents are printed to dryOut as
// "> path\n<contents>" instead, and nothing is written.
func render(path string, contents []byte, perms os.FileMode, dry bool, dryOut io.Writer) (renderResult, error) {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return renderResult{}, fmt.Errorf("failed reading file: %w", err)
	}
	if err == nil && bytes.Equal(existing, contents) {
		return renderResult{didRender: false, wouldRender: true}, nil
	}
	if dry {
		fmt.Fprintf(dryOut, "> %s\n%s", path, contents)
	} else if err := atomicWrite(path, contents, perms); err != nil {
		return renderResult{}, fmt.Errorf("failed writing file: %w", err)
	}
	return renderResult{didRender: true, wouldRender: true}, nil
}

// atomicWrite writes contents to a temporary file next to path and renames
// it over path, so readers (nginx) never see a half-written file. The
// parent directory is created (0755) if needed.
//
// The file always gets perms (0644 unless configured): consul-template
// v0.19.0 does not carry over the mode of an existing destination; that
// only arrived in later releases.
func atomicWrite(path string, contents []byte, perms os.FileMode) error {
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
	if err := os.Chmod(f.Name(), perms); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
