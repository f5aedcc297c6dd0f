// @ts-check
// One metric's chart in the device view: uPlot (web/vendor/, served by nginx like every page
// file) with a time axis, a value axis, the value under the pointer in its legend, and marks for
// status changes and alerts laid over the plot as elements. uPlot draws on a canvas and sets its
// own elements' sizes through the CSSOM (el.style.x = …), which the page's Content-Security-Policy
// allows; its stylesheet is web/vendor/uPlot.min.css.

import uPlot from './vendor/uPlot.esm.js';
import { formatMetric, metricLabel, metricUnit } from './format.js';
import { tickDigits } from './history-model.js';

/**
 * A mark on the time axis.
 * @typedef {object} Mark
 * @property {'alert' | 'status' | 'moment'} kind
 * @property {number} ts      device time, the axis' clock
 * @property {string} label   its tooltip (device text: only ever set as a property)
 * @property {string} [tone]  severity, or the state a status change went to
 */

const HEIGHT = 170;

/**
 * Value-axis labels with as many decimals as the ticks' spacing needs (a metric's own format
 * would print 75.8, 76.0 and 76.2 as "76" three times).
 * @param {number[]} splits
 */
function tickLabels(splits) {
  const digits = tickDigits(splits);
  return splits.map((v) => v.toFixed(digits));
}

/** @param {string} name */
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

export class MetricChart {
  /**
   * @param {HTMLElement} host an element the chart fills the width of
   * @param {string} metric
   * @param {() => [number, number]} range the time axis' span, device time
   */
  constructor(host, metric, range) {
    this.host = host;
    this.metric = metric;
    /** @type {Mark[]} */
    this.marks = [];
    /** @type {HTMLElement[]} */
    this.markEls = [];
    /** A moment to put the pointer on once the chart has drawn its data. */
    /** @type {number | null} */
    this.pointTs = null;
    const text = cssVar('--muted');
    const grid = cssVar('--border');
    const unit = metricUnit(metric);
    /** @type {uPlot.Axis} */
    const axisStyle = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: '12px system-ui, sans-serif' };
    /** @type {uPlot.Options} */
    const opts = {
      width: Math.max(200, host.clientWidth),
      height: HEIGHT,
      ms: 1,
      scales: { x: { time: true, range: () => range() } },
      series: [
        { label: 'Time' },
        {
          label: unit ? `${metricLabel(metric)} (${unit})` : metricLabel(metric),
          stroke: cssVar('--spark'),
          width: 1.5,
          points: { show: false },
          value: (_u, v) => (v === null || v === undefined ? '–' : formatMetric(metric, v)),
        },
      ],
      axes: [axisStyle, { ...axisStyle, size: 56, values: (_u, splits) => tickLabels(splits) }],
      // One pointer across the view's charts: hovering one shows the values of all at that time.
      cursor: { y: false, drag: { x: false, y: false }, points: { size: 7 }, sync: { key: 'device-view' } },
      legend: { live: true },
      hooks: { draw: [() => this.#placeMarks()] },
    };
    this.plot = new uPlot(opts, [[], []], host);
    this.plot.root.dataset.metric = metric;
  }

  /**
   * @param {number[]} t
   * @param {number[]} v
   */
  setData(t, v) {
    this.plot.setData([t, v]);
  }

  /** @param {Mark[]} marks */
  setMarks(marks) {
    this.marks = marks;
    this.#placeMarks();
  }

  resize() {
    const width = Math.max(200, this.host.clientWidth);
    if (width !== this.plot.width) this.plot.setSize({ width, height: HEIGHT });
  }

  /**
   * Puts the pointer on a moment, as if hovered there: the legend shows the value at it.
   * @param {number} ts
   */
  pointAt(ts) {
    this.pointTs = ts;
    this.plot.redraw(false, false);
  }

  destroy() {
    this.plot.destroy();
  }

  /** Marks are elements in the plot's overlay, placed on each redraw (a new scale moves them). */
  #placeMarks() {
    const plot = this.plot;
    const over = plot.over;
    const min = plot.scales.x?.min ?? 0;
    const max = plot.scales.x?.max ?? 0;
    // The axis' span, for anyone checking where a mark should be (the tests do).
    plot.root.dataset.xMin = String(min);
    plot.root.dataset.xMax = String(max);
    while (this.markEls.length < this.marks.length) {
      const el = document.createElement('span');
      el.className = 'mark';
      el.setAttribute('aria-hidden', 'true');
      over.append(el);
      this.markEls.push(el);
    }
    while (this.markEls.length > this.marks.length) this.markEls.pop()?.remove();
    const ts = this.pointTs;
    if (ts !== null && plot.data[0].length > 0) {
      this.pointTs = null;
      // After this draw: the cursor moves the legend, which must not happen inside it.
      queueMicrotask(() => plot.setCursor({ left: plot.valToPos(ts, 'x'), top: plot.over.clientHeight / 3 }));
    }
    for (let i = 0; i < this.marks.length; i++) {
      const mark = /** @type {Mark} */ (this.marks[i]);
      const el = /** @type {HTMLElement} */ (this.markEls[i]);
      const inside = mark.ts >= min && mark.ts <= max;
      el.hidden = !inside;
      if (!inside) continue;
      el.dataset.kind = mark.kind;
      el.dataset.ts = String(mark.ts);
      if (mark.tone) el.dataset.tone = mark.tone;
      else delete el.dataset.tone;
      el.title = mark.label;
      el.style.left = `${plot.valToPos(mark.ts, 'x')}px`;
    }
  }
}
