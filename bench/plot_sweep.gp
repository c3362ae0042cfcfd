# SPDX-License-Identifier: MIT
# plot_sweep.gp - per-task cost against tasks in flight, one line per
# runtime, from the file `bench_thread --sweep FILE` writes.
#   gnuplot -e "datafile='sweep.dat'; outfile='sweep.png'" bench/plot_sweep.gp
if (!exists("datafile")) datafile = 'sweep.dat'
if (!exists("outfile")) outfile = 'sweep.png'
set terminal pngcairo size 900,560 noenhanced font ",11"
set output outfile
set title "Per-task cost against tasks in flight (submit k, collect k, repeat; 2-core VM)"
set xlabel "tasks in flight (k)"
set ylabel "ns per task"
set logscale xy
set grid
set key top right
set datafile missing "NaN"
plot datafile using 1:2 with linespoints lw 2 title "cfutures, default pool (futures)", \
     '' using 1:3 with linespoints lw 2 dt 2 title "cfutures, CPUs - 1 workers (futures)", \
     '' using 1:4 with linespoints title "oneTBB task_group", \
     '' using 1:5 with linespoints title "libuv uv_queue_work", \
     '' using 1:6 with linespoints title "GLib GThreadPool"
