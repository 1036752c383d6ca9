module hopfloor

go 1.22
