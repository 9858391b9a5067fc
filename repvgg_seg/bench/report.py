"""The benchmark's result as a readable table."""
from .peak import format_peak


def format_table(result: dict) -> str:
    """The rows as a readable table, with what was timed."""
    setup = result['setup']
    load = setup.get('load_average')
    threads = setup.get('threads')
    tf32 = setup.get('tf32')
    lines = [
        f'timed: {setup["timed"]}',
        f'input {setup["batch_size"]}x3x{setup["shape"][0]}x'
        f'{setup["shape"][1]}, device {setup["device"]}'
        + (f' ({setup["gpu"]})' if setup.get('gpu') else '')
        + (f', {threads} threads' if threads else '')
        + ('' if tf32 is None else
           ', fp32 in TF32' if tf32 else ', fp32 without TF32')
        + f'{", torch.compile" if setup["compile"] else ""}; '
        f'{setup["rounds"]} interleaved rounds x {setup["iters"]} passes '
        f'after {setup["warmup"]} warm-up passes; torch '
        f'{setup["torch_version"]}, {setup["date"]}'
        + (f', load average {load[0]:.1f}' if load else '')]
    if result.get('peak'):
        lines += format_peak(dict(peak=result['peak'],
                                  reference_conv=result['reference_conv']))
    header = ['config', 'fused', 'engine', 'prec', 'layout', 'ms (median)',
              'IQR ms', 'img/s', 'peak MB', '+MB', 'GMACs', 'GFLOP/s']
    rows = result['rows']
    has_peak = any('peak_pct' in r for r in rows)
    has_ref = any('ref_conv_pct' in r for r in rows)
    has_agree = any(r.get('agreement') for r in rows)
    has_int8 = any('int8_convs' in r for r in rows)
    if has_peak:
        header += ['% peak', 'peak kernel']
    if has_ref:
        header.append('% ref conv')
    header.append('ratio')
    if has_agree:
        header += ['rel err', 'argmax %']
    if has_int8:
        header.append('INT8 convs')  # from the kernels OpenVINO chose
    table = [header]
    for r in rows:
        cells = [r['name'], 'yes' if r['fused'] else 'no', r['engine'],
                 r['precision'], r['layout'], f'{r["latency_ms"]:.1f}',
                 f'{r["latency_ms_q1"]:.0f}-{r["latency_ms_q3"]:.0f}',
                 f'{r["images_per_s"]:.3f}', f'{r["peak_mem_mb"]:.0f}',
                 f'{r["peak_mem_delta_mb"]:.0f}', f'{r["gmacs"]:.1f}',
                 f'{r["gflops_per_s"]:.1f}']
        if has_peak:
            cells += ([f'{r["peak_pct"]:.0f}%', r['peak_kernel']]
                      if 'peak_pct' in r else ['-', '-'])
        if has_ref:
            cells.append(f'{r["ref_conv_pct"]:.0f}%'
                         if 'ref_conv_pct' in r else '-')
        cells.append(f'{r["speed_ratio"]:.2f}x')
        if has_agree:
            a = r.get('agreement')
            cells += ([f'{a["max_rel_error"]:.2g}',
                       f'{a["argmax_agreement_pct"]:.2f}'] if a else
                      ['-', '-'])
        if has_int8:
            cells.append(f'{r["int8_convs"]}/{r["convs"]}'
                         if 'int8_convs' in r else '-')
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        lines.append('  '.join(c.ljust(w) if j < 5 else c.rjust(w)
                               for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append('  '.join('-' * w for w in widths))
    for note in setup.get('notes') or []:
        lines.append(f'note: {note}')
    return '\n'.join(lines)
