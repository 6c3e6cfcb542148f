package main

import (
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// globalFlags are shared by every command.
type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "meshgate",
		Short:         "One control plane for your API gateway and your service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newValidateCmd(),
		newControlplaneCmd(g),
		newGatewayCmd(g),
		newSidecarCmd(g),
		newDevCmd(g),
		newDemoAppCmd(g),
		newTokenCmd(),
		newCACmd(),
		newProxiesCmd(),
		newConfigDumpCmd(),
		newStatusCmd(),
		newTopCmd(),
		newApplyCmd(),
		newGetCmd(),
		newDeleteCmd(),
		newRateLimitCmd(g),
		newCacheCmd(),
		newCaptureCmd(),
		newBootstrapCmd(g),
	)
	return root
}

// logger builds the process logger from the global flags.
func (g *globalFlags) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
