#!/bin/sh
# The busybox image's app: says who it runs as and what it sees, keeps a file in its volume, and on
# SIGTERM (its stop signal) exits with code 42 so the test can check the recorded exit code.
echo "app: id=$(id)"
echo "app: home=$HOME"
echo "app: run=$(cat /run/app/greeting 2>&1)"
echo "app: runlink=$(readlink /run/app/current)"
echo "app: greeting=$GREETING"
date > /data/last-start
echo "app: data=$(ls -ln /data | tr '\n' ' ')"
trap 'echo "app: got SIGTERM"; exit 42' TERM
while :; do sleep 1 & wait $!; done
