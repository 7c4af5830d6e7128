#!/bin/sh
echo "hello from $(uname -m)"
cat /etc/hello/build-info.txt
