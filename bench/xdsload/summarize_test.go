package main

import "testing"

func TestSummarize(t *testing.T) {
	t.Parallel()
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	tests := []struct {
		name string
		in   []float64
		want change
	}{
		{"empty", nil, change{}},
		{"one", []float64{7}, change{P50MS: 7, P99MS: 7, MaxMS: 7, Acked: 1}},
		{"hundred", hundred, change{P50MS: 50, P99MS: 99, MaxMS: 100, Acked: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := summarize(tt.in); got != tt.want {
				t.Fatalf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}
