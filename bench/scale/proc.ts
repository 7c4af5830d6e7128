/**
 * A process's RSS and CPU time from /proc/<pid>, read from outside it (the
 * coordinator's own /metrics says the same, but a scrape costs it work and
 * needs its event loop free, which is what is being measured).
 */
import { readFileSync } from 'node:fs';

/** USER_HZ: /proc/<pid>/stat counts CPU time in these. */
const TICKS_PER_SECOND = 100;

export interface ProcReading {
  /** Epoch ms. */
  at: number;
  rssBytes: number;
  /** User + system CPU seconds since the process started. */
  cpuSeconds: number;
}

/** One reading; undefined when the process is gone. */
export function readProc(pid: number): ProcReading | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the comm (which may hold spaces) start at field 3: utime is 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? NaN);
    return { at: Date.now(), rssBytes: rssKb * 1024, cpuSeconds };
  } catch {
    return undefined;
  }
}

export interface ProcWindow {
  /** Seconds of wall time the window lasted. */
  seconds: number;
  /** CPU seconds used in the window. */
  cpuSeconds: number;
  /** Mean share of one CPU over the window (1 = one core busy). */
  cpuCores: number;
  /** Highest CPU share seen over any one sampling interval. */
  peakCpuCores: number;
  peakRssBytes: number;
  lastRssBytes: number;
}

/** Samples a process every `intervalMs` until stopped; summarises the window. */
export class ProcSampler {
  private readonly first: ProcReading;
  private last: ProcReading;
  /** The reading the next CPU-share interval is measured from. */
  private cpuBase: ProcReading;
  private peakRss: number;
  private peakCpu = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    intervalMs = 250,
  ) {
    const reading = readProc(pid);
    if (!reading) throw new Error(`process ${pid} is gone`);
    this.first = reading;
    this.last = reading;
    this.cpuBase = reading;
    this.peakRss = reading.rssBytes;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Ends the window and summarises it. */
  stop(): ProcWindow {
    clearInterval(this.timer);
    this.sample();
    const seconds = (this.last.at - this.first.at) / 1000;
    const cpuSeconds = this.last.cpuSeconds - this.first.cpuSeconds;
    return {
      seconds,
      cpuSeconds,
      cpuCores: seconds > 0 ? cpuSeconds / seconds : 0,
      peakCpuCores: this.peakCpu,
      peakRssBytes: this.peakRss,
      lastRssBytes: this.last.rssBytes,
    };
  }

  private sample(): void {
    const reading = readProc(this.pid);
    if (!reading) return;
    this.last = reading;
    this.peakRss = Math.max(this.peakRss, reading.rssBytes);
    const seconds = (reading.at - this.cpuBase.at) / 1000;
    // The CPU share over >= 1 s: ticks are 10 ms, a shorter interval reads as noise.
    if (seconds >= 1) {
      const share = (reading.cpuSeconds - this.cpuBase.cpuSeconds) / seconds;
      this.peakCpu = Math.max(this.peakCpu, share);
      this.cpuBase = reading;
    }
  }
}

/** CPU seconds of every process on the box (from /proc/stat), to see who else was busy. */
export function boxCpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const ticks = line.split(/\s+/).slice(1, 9).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
  const busy = ticks.reduce((a, b) => a + b, 0) - (ticks[3] ?? 0) - (ticks[4] ?? 0);
  return busy / TICKS_PER_SECOND;
}
